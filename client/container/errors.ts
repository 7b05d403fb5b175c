/** One-line error texts for the container tools (errors here end up as the CLI's single line). */

/** The first line of an error's message (tools and daemons sometimes answer with several). */
export function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split("\n")[0] ?? text;
}

/** A filesystem error in words, without the syscall and path noise of Node's messages. */
export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case "ENOENT":
      return "no such file or directory";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "EISDIR":
      return "is a directory, not a file";
    case "ENOTDIR":
      return "a component of the path is not a directory";
    case "ENOSPC":
      return "no space left on the device";
    default:
      return firstLine(err);
  }
}
