/**
 * TypeBox helpers shared by the domain (which checks request bodies with its
 * schemas) and the HTTP edge (which publishes the same schemas in OpenAPI).
 *
 * A schema may carry the message a person gets when a value does not fit it,
 * as the OpenAPI extension `x-message`: a string for any failed keyword, or a
 * map keyword → message with an optional `default`. `shapeErrors` reports
 * every mismatch of a value as `{field, message}`, using the message of the
 * nearest schema that has one for the failed keyword (TypeBox's own wording
 * otherwise). Unknown properties of an object are reported one by one as
 * "unknown field", unless the object's `x-message` names `additionalProperties`.
 */
import { Type, type TUnsafe } from 'typebox';
import type { Validator } from 'typebox/compile';
import { Settings } from 'typebox/system';

export interface FieldError {
  /** Dotted path of the field, array items as `[i]` (`target.devices[0]`); '' for the body itself. */
  field: string;
  message: string;
}

export type MessageAnnotation = string | Readonly<Record<string, string>>;

/** A string enum rendered as `{type: "string", enum: [...]}` (clean in OpenAPI and in validation errors). */
export function StringEnum<const T extends readonly string[]>(values: T, opts: Record<string, unknown> = {}): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...opts });
}

/**
 * Upper bound on the mismatches collected for one value. TypeBox stops at 8
 * by default (a guard against huge diagnostics); a form with many wrong
 * fields must still get all of them, and a request body is size-limited.
 */
export const MAX_SHAPE_ERRORS = 1000;

type Node = Record<string, unknown>;
interface RawError { keyword: string; schemaPath: string; instancePath: string; params: Record<string, unknown>; message: string }

/** Every way `value` does not fit the validator's schema, in the schema's order, without duplicates. */
export function shapeErrors(validator: Validator, value: unknown): FieldError[] {
  if (validator.Check(value)) return [];
  const previous = Settings.Get().maxErrors;
  Settings.Set({ maxErrors: MAX_SHAPE_ERRORS });
  let raw: RawError[];
  try {
    raw = validator.Errors(value) as unknown as RawError[];
  } finally {
    Settings.Set({ maxErrors: previous });
  }
  const root = validator.Type() as unknown as Node;
  const out: FieldError[] = [];
  const seen = new Set<string>();
  const push = (field: string, message: string): void => {
    const key = `${field}\u0000${message}`;
    if (!seen.has(key)) { seen.add(key); out.push({ field, message }); }
  };
  for (const e of raw) {
    // TypeBox reports each unknown property twice: as `false` for that property and in the object's summary.
    if (e.keyword === 'boolean' && e.schemaPath.endsWith('/additionalProperties')) continue;
    const chain = schemaChain(root, e.schemaPath);
    const field = fieldOf(value, e.instancePath);
    const node = chain[chain.length - 1]!;
    if (e.keyword === 'required') {
      const props = (node.properties ?? {}) as Record<string, Node>;
      for (const p of (e.params.requiredProperties as string[] | undefined) ?? []) {
        const own = props[p] ? messageFor([props[p]!], 'required') : undefined;
        push(join(field, p), own ?? `${p} is required`);
      }
    } else if (e.keyword === 'additionalProperties' && !hasOwnMessage(node, 'additionalProperties')) {
      for (const p of (e.params.additionalProperties as string[] | undefined) ?? []) push(join(field, p), 'unknown field');
    } else {
      push(field, messageFor(chain, e.keyword) ?? e.message);
    }
  }
  return out;
}

/** The schema nodes from the root down to `schemaPath` (a JSON pointer such as `#/properties/at/anyOf/0`). */
function schemaChain(root: Node, schemaPath: string): Node[] {
  const chain: Node[] = [root];
  let cur: unknown = root;
  for (const seg of schemaPath.replace(/^#\/?/, '').split('/').filter(Boolean)) {
    cur = (cur as Record<string, unknown> | undefined)?.[seg.replace(/~1/g, '/').replace(/~0/g, '~')];
    if (isNode(cur) && !Array.isArray(cur)) chain.push(cur);
  }
  return chain;
}

/** The message of the deepest schema in `chain` that has one for `keyword`. */
function messageFor(chain: Node[], keyword: string): string | undefined {
  for (let i = chain.length - 1; i >= 0; i--) {
    const m = chain[i]!['x-message'] as MessageAnnotation | undefined;
    if (typeof m === 'string') return m;
    if (m && (m[keyword] ?? m.default) !== undefined) return m[keyword] ?? m.default;
  }
  return undefined;
}

function hasOwnMessage(node: Node, keyword: string): boolean {
  const m = node['x-message'] as MessageAnnotation | undefined;
  return typeof m === 'object' && m !== null && m[keyword] !== undefined;
}

/** `/target/devices/0` → `target.devices[0]` (array items by index, read from the value itself). */
function fieldOf(value: unknown, instancePath: string): string {
  let field = '';
  let cur: unknown = value;
  for (const raw of instancePath.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    field = Array.isArray(cur) ? `${field}[${seg}]` : join(field, seg);
    cur = isNode(cur) ? (cur as Record<string, unknown>)[seg] : undefined;
  }
  return field;
}

const join = (parent: string, key: string): string => (parent ? `${parent}.${key}` : key);
const isNode = (v: unknown): v is Node => typeof v === 'object' && v !== null;

