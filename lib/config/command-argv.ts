/**
 * Turns a configured command prefix such as `kubectl exec -n spire spire-server-0 --` into an argv
 * array. It is never given to a shell: words split on whitespace, "double" or 'single' quotes group
 * a word (no escapes, no expansion inside). Characters that would mean something to a shell
 * (; | & $ ` < > ( ) \ and glob / history / comment characters) are refused wherever they appear, so a
 * value written with shell semantics in mind fails loudly instead of running something else.
 */

export class ArgvError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ArgvError";
  }
}

const FORBIDDEN = /[;|&$`<>()\\*?[\]{}~!#]/;

export function parseArgv(text: string): string[] {
  const bad = FORBIDDEN.exec(text);
  if (bad) {
    throw new ArgvError(
      `'${bad[0]}' is a shell metacharacter; the command runs as an argv list without a shell, so write plain words (put pipelines or redirections in a wrapper script)`,
    );
  }
  if (hasControl(text)) throw new ArgvError("control characters (newline, NUL, ...) are not allowed");

  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = undefined;
      else word += ch;
      continue;
    }
    if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (ch === " " || ch === "\t") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += ch;
      inWord = true;
    }
  }
  if (quote) throw new ArgvError(`unterminated ${quote} quote; close it`);
  if (inWord) words.push(word);
  return words;
}

/** Any C0 control character except tab, or DEL. */
function hasControl(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f) return true;
  }
  return false;
}
