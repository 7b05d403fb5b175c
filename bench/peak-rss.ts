/**
 * Peak resident memory of processes, for the benchmarks: VmHWM from /proc (all threads of a process;
 * not getrusage, whose maxrss Linux starts from the forking parent's RSS), and a sampler for child
 * processes, whose VmHWM is gone once they exit and must be read while they run.
 */

import { readFileSync } from "node:fs";
import { readFile, readdir } from "node:fs/promises";

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

/** Direct children of `pid`, from every thread's children list (a worker thread's spawns included). */
export async function children(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [] as string[])) {
    const text = await readFile(`/proc/${pid}/task/${tid}/children`, "utf8").catch(() => "");
    for (const p of text.split(/\s+/)) if (p) out.push(Number(p));
  }
  return out;
}

/**
 * Samples every 50 ms the peak RSS of the given processes (or of this process's children) until
 * stopped; `stop` returns the sum of the given processes' peaks (they run at the same time), or the
 * largest child's peak.
 */
export function sampler(pids?: () => number[]): { stop(): Promise<number> } {
  const peaks = new Map<number, number>();
  const tick = async (): Promise<void> => {
    for (const p of pids ? pids() : await children(process.pid)) {
      peaks.set(p, Math.max(peaks.get(p) ?? 0, await vmHwm(p)));
    }
  };
  const timer = setInterval(() => void tick(), 50);
  return {
    async stop() {
      clearInterval(timer);
      await tick();
      return pids ? [...peaks.values()].reduce((a, b) => a + b, 0) : Math.max(0, ...peaks.values());
    },
  };
}
