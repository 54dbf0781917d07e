/** Worker-thread entry: runs one slice of the load and posts its result back. */
import { parentPort, workerData } from 'node:worker_threads';
import { runLoadSlice, type LoadSliceOptions, type Schedule } from './load.js';

const port = parentPort!;
const result = await runLoadSlice(workerData as LoadSliceOptions, () => new Promise<Schedule>((resolve) => {
  port.once('message', (s: Schedule) => resolve(s));
  port.postMessage({ type: 'connected' });
}));
port.postMessage({ type: 'result', result }, [result.latencies.buffer as ArrayBuffer]);
