/**
 * The serial console of an Instance this agent runs, as the local end of a byte stream the hub
 * asked for (loam console).
 *
 * How: the domain's first serial port is a pty (domain-xml.ts), whose device libvirt names in
 * the live XML (`<serial type='pty'><source path='/dev/pts/N'/>`). The agent opens that device
 * and reads and writes it as a non-blocking TTY (node:tty), which is what libvirtd itself does
 * for virDomainOpenConsole. QEMU makes the pty raw (TCG and KVM alike), so bytes pass unchanged,
 * and its reads end when the domain stops. Not `virsh console`: it refuses to run without a
 * controlling terminal, which Node cannot give a child without a native pty module. This needs
 * the agent beside libvirtd (a local URI, as the agent runs on its hypervisor) and allowed to
 * open the device (root, as QEMU's ptys belong to root or the qemu user).
 *
 * Only an Instance this agent runs: the domain must carry that Instance's identity (namespace,
 * name and uid) in its Loam metadata. One session per domain: two readers of a pty would each
 * get part of the output, so a new session closes the one before, as `virsh console --force`.
 */
import { close as closeFd, constants, open as openFd } from 'node:fs';
import { Duplex } from 'node:stream';
import { ReadStream } from 'node:tty';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { isLoamError, LoamError } from '../../crds/errors.js';
import type { ResourceRef } from '../runtime/driver.js';
import { type DomainFacts, domainName, parseDomainXml } from './domain-xml.js';
import { type Hypervisor, isActive } from './hypervisor.js';

export interface ConsolesOptions {
  hypervisor: Hypervisor;
  logger: Logger;
  /** Opens a pty device for reading and writing (tests stand in for it). */
  openDevice?: (path: string) => Promise<Duplex>;
}

// Where Linux's devpts puts ptys: nothing else named in an XML is ever opened.
const ptyPath = /^\/dev\/pts\/\d+$/;

export class Consoles {
  private readonly hypervisor: Hypervisor;
  private readonly logger: Logger;
  private readonly openDevice: (path: string) => Promise<Duplex>;
  /** The session on each domain, by UUID. */
  private readonly sessions = new Map<string, Duplex>();

  constructor(options: ConsolesOptions) {
    this.hypervisor = options.hypervisor;
    this.logger = options.logger;
    this.openDevice = options.openDevice ?? openPty;
  }

  /**
   * The console of `resource`, at once: its device is attached once found and checked. When it
   * cannot be (not an Instance this agent runs, not running, no pty), the stream is destroyed
   * with a LoamError saying why, and that is logged (the stream protocol carries no reason).
   */
  open(resource: ResourceRef | undefined): Duplex {
    const stream = new ConsoleStream();
    this.attach(resource, stream).catch((err: unknown) => {
      const instance = `${resource?.namespace}/${resource?.name}`;
      this.logger.warn({ instance, err: (err as Error).message }, 'console refused');
      stream.destroy(err as Error);
    });
    return stream;
  }

  private async attach(resource: ResourceRef | undefined, stream: ConsoleStream): Promise<void> {
    if (resource?.kind !== 'Instance') {
      throw new LoamError('BadRequest', `a console is an Instance's, not a ${resource?.kind ?? 'nothing'}'s`);
    }
    // Domains are named by the Instance uid (their UUID), by namespace and name without one.
    const domain = resource.uid || domainName(resource.namespace, resource.name);
    const { uuid, consolePty } = await this.runningDomain(domain, resource);
    const device = await this.openDevice(consolePty);
    try {
      // A domain that restarted meanwhile has a new pty, and the old number may be another's now.
      if ((await this.runningDomain(domain, resource)).consolePty !== consolePty) {
        throw new LoamError('Conflict', `domain ${domain} restarted while its console opened; try again`);
      }
    } catch (err) {
      device.destroy();
      throw err;
    }
    if (stream.destroyed) {
      device.destroy();
      return;
    }
    this.sessions.get(uuid)?.destroy();
    this.sessions.set(uuid, stream);
    stream.once('close', () => {
      if (this.sessions.get(uuid) === stream) this.sessions.delete(uuid);
    });
    stream.attach(device);
    this.logger.info(
      { instance: `${resource.namespace}/${resource.name}`, pty: consolePty },
      'console attached',
    );
  }

  /** The facts of the running domain of `resource`, with its pty; NotFound unless it is this agent's. */
  private async runningDomain(
    domain: string,
    resource: ResourceRef,
  ): Promise<DomainFacts & { consolePty: string }> {
    const instance = `Instance ${resource.namespace}/${resource.name}`;
    let facts: DomainFacts;
    try {
      const status = await this.hypervisor.state(domain);
      if (!isActive(status)) {
        throw new LoamError(
          'Conflict',
          `${instance} is not running on this host (its domain is ${status.state})`,
        );
      }
      facts = parseDomainXml(await this.hypervisor.dumpxml(domain));
    } catch (err) {
      if (isLoamError(err, 'NotFound'))
        throw new LoamError('NotFound', `${instance} does not run on this host`);
      throw err;
    }
    const { identity, consolePty } = facts;
    if (
      identity?.namespace !== resource.namespace ||
      identity.name !== resource.name ||
      (resource.uid !== '' && identity.uid !== resource.uid)
    ) {
      throw new LoamError('NotFound', `${instance} does not run on this host`);
    }
    if (consolePty === undefined || !ptyPath.test(consolePty)) {
      throw new LoamError(
        'Internal',
        `domain ${facts.name} has no serial console pty (libvirt names ${consolePty ?? 'none'})`,
      );
    }
    return { ...facts, consolePty };
  }
}

/** A pty device as a Duplex: a non-blocking TTY handle, never the agent's controlling terminal. */
async function openPty(path: string): Promise<Duplex> {
  const fd = await promisify(openFd)(path, constants.O_RDWR | constants.O_NOCTTY);
  let device: ReadStream;
  try {
    // Readable and writable: libuv opens the TTY handle in the fd's own mode.
    device = new ReadStream(fd);
  } catch (err) {
    closeFd(fd, () => {});
    throw err;
  }
  // libuv reopens a pty by its name for a handle of its own and closes only that one when the
  // stream is destroyed. The fd opened here would stay open after a detach, and QEMU, seeing the
  // pty still open, would stop the guest's serial output (the guest hangs) once its buffer filled.
  const handleFd = (device as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof handleFd === 'number' && handleFd !== fd) closeFd(fd, () => {});
  return device;
}

/**
 * The stream handed to the runtime at once, joined to the device once it is open. What the hub
 * writes before waits (one write: the next comes once it is done); the device's end ends the
 * readable side, and destroying the stream closes the device.
 */
class ConsoleStream extends Duplex {
  private device: Duplex | undefined;
  private waiting: { chunk: Buffer; callback: (err?: Error | null) => void } | undefined;

  attach(device: Duplex): void {
    this.device = device;
    device.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) device.pause();
    });
    device.once('end', () => this.push(null));
    device.once('error', (err: Error) => this.destroy(err));
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting !== undefined) device.write(waiting.chunk, waiting.callback);
  }

  override _read(): void {
    this.device?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.device === undefined) this.waiting = { chunk, callback };
    else this.device.write(chunk, callback);
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.device?.destroy();
    callback(err);
  }
}
