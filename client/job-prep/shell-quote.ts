/**
 * Quoting for the generated job script. Bash single quotes take every byte literally except the
 * quote itself, which is closed, escaped and reopened; so a quoted value is never expanded, split or
 * globbed, whatever it contains. NUL cannot be part of a shell word and is refused by the callers.
 */

/** `value` as one bash word, e.g. it's → 'it'\''s'. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** `readonly NAME='value'`. */
export function readonlyScalar(name: string, value: string): string {
  return `readonly ${name}=${shellQuote(value)}`;
}

/** `readonly -a NAME=('a' 'b')`, or `readonly -a NAME=()` for none. */
export function readonlyArray(name: string, values: readonly string[]): string {
  return `readonly -a ${name}=(${values.map(shellQuote).join(" ")})`;
}
