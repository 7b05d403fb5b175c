/**
 * Docker image references as the daemon accepts them (`name[:tag][@digest]`, or an image ID), checked
 * before anything is asked of the daemon: a reference reaches an HTTP path and error messages, so it
 * must be exactly one reference and nothing else.
 *
 * The grammar is the one of github.com/distribution/reference (domain, lowercase path components
 * separated by `/`, tag `[\w][\w.-]{0,127}`, digest `algo:hex`), written as regular expressions here.
 */

const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[0-9a-fA-F:]+\\])(?::[0-9]+)?`;
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const NAME = `(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*`;
const TAG = "[\\w][\\w.-]{0,127}";
const DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";

const REFERENCE = new RegExp(`^${NAME}(?::${TAG})?(?:@${DIGEST})?$`);
const IMAGE_ID = /^(?:sha256:)?[a-f0-9]{12,64}$/;
/** distribution/reference's limit on the name part. */
const MAX_NAME_LENGTH = 255;

/** Returns the reference unchanged, or throws one line naming the problem and the expected form. */
export function checkImageReference(ref: string): string {
  const shown = JSON.stringify(ref);
  if (IMAGE_ID.test(ref)) return ref;
  const name = ref.replace(/@.*$/, "").replace(/:[\w][\w.-]*$/, "");
  if (!REFERENCE.test(ref) || name.length > MAX_NAME_LENGTH) {
    throw new Error(
      `image ${shown} is not a Docker image reference: use name[:tag][@sha256:digest] ` +
        `(lowercase name, e.g. "myapp:1.0" or "registry.example.org/group/myapp:1.0") or an image ID`,
    );
  }
  return ref;
}
