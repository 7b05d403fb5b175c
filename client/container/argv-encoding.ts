/**
 * How the image's own arguments (ENTRYPOINT, CMD) and WORKDIR reach the entrypoint wrapper intact.
 *
 * The wrapper is a POSIX sh script (busybox ash, dash, bash all run it) and must rebuild "$@" without
 * `eval` and without `sh -c` on a spliced string, so no quoting language is ever interpreted. Format:
 * one argument per line; every byte outside `[A-Za-z0-9_./,:=+@-]` (spaces, quotes, `$`, backslashes,
 * newlines, non-ASCII bytes…) is written as a `\0ooo` octal escape, which `printf '%b'` turns back
 * into that byte. A line therefore only ever contains those safe characters and backslash-digit
 * escapes, so the file cannot carry anything the shell would act on. An empty line is an empty
 * argument. NUL cannot be in an argument (the kernel's argv is NUL-terminated) and is refused.
 */

const SAFE = /^[A-Za-z0-9_./,:=+@-]$/;

/** One argument → one line (without its newline). */
export function encodeArg(arg: string, what = "argument"): string {
  if (arg.includes("\0")) throw new Error(`${what} contains a NUL byte, which no program can receive`);
  let out = "";
  for (const byte of Buffer.from(arg, "utf8")) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && SAFE.test(ch) ? ch : `\\0${byte.toString(8).padStart(3, "0")}`;
  }
  return out;
}

/** Arguments → file contents (every line newline-terminated; no arguments → empty file). */
export function encodeArgv(args: readonly string[], what = "argument"): string {
  return args.map((a, i) => `${encodeArg(a, `${what} ${i + 1}`)}\n`).join("");
}

/** The inverse of encodeArgv, as the wrapper's `printf '%b'` computes it (for tests and tooling). */
export function decodeArgv(text: string): string[] {
  if (text === "") return [];
  if (!text.endsWith("\n")) throw new Error("encoded argv must end with a newline");
  return text
    .slice(0, -1)
    .split("\n")
    .map((line) => {
      const bytes: number[] = [];
      for (let i = 0; i < line.length;) {
        const m = /^\\0([0-7]{3})/.exec(line.slice(i, i + 5));
        if (m?.[1]) {
          bytes.push(parseInt(m[1], 8));
          i += 5;
        } else {
          bytes.push(line.charCodeAt(i));
          i += 1;
        }
      }
      return Buffer.from(bytes).toString("utf8");
    });
}
