/**
 * Peak resident memory of processes, for the benchmarks: VmHWM from /proc (all threads of a process;
 * not getrusage, whose maxrss Linux starts from the forking parent's RSS), and a sampler for child
 * processes, whose VmHWM is gone once they exit and must be read while they run.
 */

import { readFileSync, readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";

/** This process's VmHWM in bytes. */
export function vmHwmSync(): number {
  const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** VmHWM of `pid` in bytes; 0 if it is gone. */
export async function vmHwm(pid: number | "self"): Promise<number> {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** VmHWM of `pid` in bytes, read synchronously (see sampler); 0 if it is gone. */
function vmHwmNow(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Direct children of `pid`, from every thread's children list (a worker thread's spawns included). */
export function children(pid: number): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8");
    } catch {
      continue; // the thread ended
    }
    for (const p of text.split(/\s+/)) if (p) out.push(Number(p));
  }
  return out;
}

/**
 * Samples every 100 ms the peak RSS of the given processes (or of this process's children) until
 * stopped; `stop` returns the sum of the given processes' peaks (they run at the same time), or the
 * largest child's peak. VmHWM is already a high-water mark, so a sample only has to come after the
 * peak, not at it. Reads are synchronous: a few small /proc reads cost microseconds that way, where
 * fs/promises' open/fstat/read/close round trips through the threadpool cost the measured process
 * ~0.5 s of its calling thread per GiB shipped (measured with --cpu-prof) — the sampler must not
 * slow down what it measures.
 */
export function sampler(pids?: () => number[]): { stop(): Promise<number> } {
  const peaks = new Map<number, number>();
  const tick = (): void => {
    for (const p of pids ? pids() : children(process.pid)) {
      peaks.set(p, Math.max(peaks.get(p) ?? 0, vmHwmNow(p)));
    }
  };
  const timer = setInterval(tick, 100);
  return {
    async stop() {
      clearInterval(timer);
      tick();
      return pids ? [...peaks.values()].reduce((a, b) => a + b, 0) : Math.max(0, ...peaks.values());
    },
  };
}
