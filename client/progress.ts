/**
 * Progress for long work: a bar with bytes, rate and ETA on a terminal (stderr, so stdout stays
 * clean for --json), nothing otherwise. Steps without a byte count show as a one-line status.
 */

import { SingleBar } from "cli-progress";

export interface Progress {
  step(label: string): void;
  bytes(done: number): void;
  stop(): void;
}

export const NO_PROGRESS: Progress = { step: () => undefined, bytes: () => undefined, stop: () => undefined };

export function terminalProgress(opts: { total: number; stream?: NodeJS.WriteStream }): Progress {
  const stream = opts.stream ?? process.stderr;
  if (!stream.isTTY) return NO_PROGRESS;
  const started = Date.now();
  let shown = false;
  const bar = new SingleBar({
    stream,
    format: "{label} |{bar}| {percentage}% {done}/{size} {rate} ETA {eta_formatted}",
    hideCursor: true,
    etaBuffer: 50,
    fps: 5,
  });
  const payload = (done: number, label: string): Record<string, string> => {
    const secs = (Date.now() - started) / 1000;
    return {
      label: label.padEnd(8),
      done: mib(done),
      size: mib(opts.total),
      rate: secs > 0 ? `${(done / 1e6 / secs).toFixed(0)} MB/s` : "",
    };
  };
  let label = "";
  return {
    step(l) {
      label = l;
      if (!shown) {
        bar.start(Math.max(opts.total, 1), 0, payload(0, l));
        shown = true;
      } else bar.update(payload(0, l));
    },
    bytes(done) {
      if (shown) bar.update(Math.min(done, opts.total), payload(done, label));
    },
    stop() {
      if (shown) bar.stop();
    },
  };
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}
