/** Worker-thread entry: runs one slice of the load and posts its result back. */
import { parentPort, workerData } from 'node:worker_threads';
import { runLoadSlice, type LoadSliceOptions } from './load.js';

const result = await runLoadSlice(workerData as LoadSliceOptions);
parentPort!.postMessage(result, [result.latencies.buffer as ArrayBuffer]);
