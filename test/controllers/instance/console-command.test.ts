/** The pure parts of `loam console`: the URL, the escape character, one-line refusals. */
import assert from 'node:assert/strict';
import { beforeEscape, consoleUrl, escapeByte } from '../../../controllers/instance/console-command.js';
import { refusal } from '../../../controllers/instance/subresource-request.js';

describe('controllers/instance/console-command', () => {
  it("is the Instance's console subresource, on the API server's scheme, host and path prefix", () => {
    assert.equal(
      consoleUrl('https://127.0.0.1:6443', 'default', 'web-1'),
      'wss://127.0.0.1:6443/apis/loam.dev/v1alpha1/namespaces/default/instances/web-1/console',
    );
    assert.equal(
      consoleUrl('https://loam.example.org/k8s/', 'team-a', 'db'),
      'wss://loam.example.org/k8s/apis/loam.dev/v1alpha1/namespaces/team-a/instances/db/console',
    );
    assert.equal(
      consoleUrl('http://localhost:8080', 'a', 'b'),
      'ws://localhost:8080/apis/loam.dev/v1alpha1/namespaces/a/instances/b/console',
    );
  });

  it('sends what comes before Ctrl+] and detaches there', () => {
    const ctrlBracket = String.fromCharCode(escapeByte);
    assert.deepEqual(beforeEscape(Buffer.from('ls -l\r')), { data: Buffer.from('ls -l\r'), detach: false });
    assert.deepEqual(beforeEscape(Buffer.from(`exit\r${ctrlBracket}more`)), {
      data: Buffer.from('exit\r'),
      detach: true,
    });
    assert.deepEqual(beforeEscape(Buffer.from(ctrlBracket)), { data: Buffer.alloc(0), detach: true });
  });

  it("turns the API server's refusals into one line with their code", () => {
    const status = (code: number, reason: string, message: string, name?: string) =>
      JSON.stringify({
        kind: 'Status',
        status: 'Failure',
        code,
        reason,
        message,
        ...(name ? { details: { name, kind: 'instances' } } : {}),
      });
    const cases: [number, string, string, RegExp][] = [
      [
        404,
        status(404, 'NotFound', 'instances.loam.dev "web" not found', 'web'),
        'NotFound',
        /^instance default\/web not found$/,
      ],
      [
        404,
        status(404, 'NotFound', 'the server could not find the requested resource'),
        'NotFound',
        /^cannot open the console of instance default\/web: the server could not find the requested resource \(HTTP 404\)$/,
      ],
      [
        403,
        status(
          403,
          'Forbidden',
          'instances.loam.dev "web" is forbidden: User "alice" cannot get resource "instances/console"',
          'web',
        ),
        'Forbidden',
        /^forbidden: these credentials may not open the console of instance default\/web$/,
      ],
      [
        401,
        status(401, 'Unauthorized', 'Unauthorized'),
        'Unauthorized',
        /^unauthorized: .*\(Unauthorized\)$/,
      ],
      [
        409,
        status(
          409,
          'Conflict',
          'Operation cannot be fulfilled on instances.loam.dev "web": the Instance is not scheduled to a Host (phase Pending)',
          'web',
        ),
        'Conflict',
        /not scheduled to a Host \(phase Pending\) \(HTTP 409\)$/,
      ],
      [
        503,
        status(503, 'ServiceUnavailable', 'libvirt agent hv1 is not connected'),
        'Unavailable',
        /: libvirt agent hv1 is not connected \(HTTP 503\)$/,
      ],
      [502, '<html>\nBad Gateway\n</html>', 'Internal', /: <html> \(HTTP 502\)$/],
    ];
    for (const [code, body, expected, message] of cases) {
      const err = refusal(code, body, 'default/web', 'open the console of');
      assert.equal(err.code, expected, body);
      assert.match(err.message, message);
      assert.ok(!err.message.includes('\n'), 'one line');
    }
  });
});
