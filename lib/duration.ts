/**
 * Durations as operators and researchers type them: "90s", "15m", "1h", "7d" or plain seconds.
 * One parser for config keys and CLI flags, so `--expires 7d` and `node-token-ttl = 7d` agree.
 */

export class InvalidDurationError extends Error {
  constructor(
    readonly value: string,
    readonly minSec: number,
    readonly maxSec: number,
  ) {
    super(
      `${JSON.stringify(value)} is not a duration between ${formatDuration(minSec)} and ${formatDuration(maxSec)}; use e.g. 90s, 15m, 1h or 7d`,
    );
    this.name = "InvalidDurationError";
  }
}

/** Seconds in [minSec, maxSec]; throws InvalidDurationError otherwise. */
export function parseDuration(value: string, minSec: number, maxSec: number): number {
  const m = /^(\d{1,7})([smhd]?)$/.exec(value.trim());
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m?.[2] ?? ""] ?? 1;
  const secs = m ? Number(m[1]) * unit : NaN;
  if (!m || !(secs >= minSec && secs <= maxSec)) throw new InvalidDurationError(value, minSec, maxSec);
  return secs;
}

/** The largest whole unit: 86400 → "1d", 5400 → "90m", 61 → "61s". */
export function formatDuration(secs: number): string {
  for (const [unit, n] of [
    ["d", 86400],
    ["h", 3600],
    ["m", 60],
  ] as const) {
    if (secs >= n && secs % n === 0) return `${secs / n}${unit}`;
  }
  return `${secs}s`;
}
