/**
 * Runs tasks one at a time, in the order they come: for reconciles that decide on many objects at
 * once (scheduling, address or segment allocation), so no two decide on the same free resource.
 * A task that fails does not hold up the next one.
 */
export class Serialized {
  private last: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const run = this.last.then(task);
    this.last = run.catch(() => {});
    return run;
  }
}
