/** Client names and agent ids appear in deploy maps, paths and logs: keep them plain. */
const NAME_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

/** Returns a message naming the field and value when `value` is not a valid name, else undefined. */
export function nameProblem(field: string, value: string): string | undefined {
  if (NAME_PATTERN.test(value)) return undefined;
  return `${field} must be 1 to 128 characters of letters, digits, '.', '_' and '-', got ${JSON.stringify(value)}`;
}
