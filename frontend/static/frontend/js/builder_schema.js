// Reading the plan's JSON schema (trainers.plan.plan_schema(), pydantic): references, optional
// (nullable) fields, defaults, bounds and the words a form shows for a field. Also the path
// helpers the builder uses on the plan document (paths are arrays: ["stages", 1, "replay"]).

export function schemaReader(root) {
  const defs = root.$defs || {};
  // A $ref is replaced by its definition (the referring node's own keys win); `__def` keeps
  // the definition's name, which the form's layout and widgets are keyed by ("StageSpec").
  const resolve = (node) => {
    let n = node || {};
    for (let i = 0; n.$ref && i < 20; i += 1) {
      const { $ref, ...rest } = n;
      const name = $ref.split("/").pop();
      n = { ...(defs[name] || {}), ...rest, __def: name };
    }
    return n;
  };
  const defOf = (node) => {
    const n = resolve(node);
    return n.__def || n.title || "";
  };
  return { root, resolve, defOf };
}

// {inner, nullable}: `X | None` is anyOf [X, {type: "null"}]; anything else is itself.
export function unwrapNullable(node) {
  const alts = node.anyOf || node.oneOf;
  if (!alts) return { inner: node, nullable: false };
  const nonNull = alts.filter((a) => a.type !== "null");
  if (nonNull.length === alts.length) return { inner: node, nullable: false };
  if (nonNull.length !== 1) return { inner: { ...node, anyOf: nonNull, oneOf: undefined }, nullable: true };
  const { anyOf, oneOf, ...outer } = node;
  return { inner: { ...nonNull[0], ...keepDoc(outer) }, nullable: true, outer };
}

function keepDoc(outer) {
  const out = {};
  for (const k of ["title", "description", "default"]) if (k in outer) out[k] = outer[k];
  return out;
}

export function kindOf(node) {
  if (node.const !== undefined) return "const";
  if (node.enum) return "enum";
  if (node.oneOf || node.anyOf) return "union";
  if (node.type === "object" || node.properties) return "object";
  if (node.type === "array") {
    if (node.prefixItems) return "tuple";
    return "array";
  }
  return node.type || "any";
}

// A short human text of the bounds: "> 0", "0 … 1", "≤ 65,536". Huge technical bounds (2^53)
// are not worth reading.
export function boundsText(node) {
  const fmt = (x) => (Math.abs(x) >= 1e4 ? x.toLocaleString("en") : String(x));
  const big = (x) => x === undefined || Math.abs(x) >= 1e15;
  const lo = node.minimum !== undefined ? `≥ ${fmt(node.minimum)}` : node.exclusiveMinimum !== undefined ? `> ${fmt(node.exclusiveMinimum)}` : "";
  const hiVal = node.maximum !== undefined ? node.maximum : node.exclusiveMaximum;
  const hi = big(hiVal) ? "" : node.maximum !== undefined ? `≤ ${fmt(node.maximum)}` : `< ${fmt(node.exclusiveMaximum)}`;
  return [lo, hi].filter(Boolean).join(", ");
}

export function helpText(node, { nullable = false } = {}) {
  const parts = [];
  if (node.description) parts.push(node.description);
  const b = boundsText(node);
  if (b) parts.push(b);
  if (node.default !== undefined && node.default !== null && typeof node.default !== "object") parts.push(`default ${node.default}`);
  else if (Array.isArray(node.default)) parts.push(`default ${node.default.join(", ")}`);
  else if (nullable && node.default === null) parts.push("optional");
  return parts.join(" · ");
}

export function humanize(key) {
  const s = String(key).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

// Paths -------------------------------------------------------------------------------------

export const pathKey = (path) => path.join(".");

export function getAt(obj, path) {
  let node = obj;
  for (const p of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = node[p];
  }
  return node;
}

export function setAt(obj, path, value) {
  let node = obj;
  for (let i = 0; i < path.length - 1; i += 1) {
    const p = path[i];
    if (node[p] === null || typeof node[p] !== "object") node[p] = typeof path[i + 1] === "number" ? [] : {};
    node = node[p];
  }
  node[path[path.length - 1]] = value;
}

export function unsetAt(obj, path) {
  const parent = getAt(obj, path.slice(0, -1));
  if (parent && typeof parent === "object" && !Array.isArray(parent)) delete parent[path[path.length - 1]];
}

export const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)));

// The value an object would have with its schema defaults filled in (for comparing plans).
export function withDefaults(reader, node, value) {
  const n = reader.resolve(node);
  const out = { ...(value || {}) };
  for (const [k, p] of Object.entries(n.properties || {})) {
    if (out[k] === undefined && p.default !== undefined) out[k] = p.default;
  }
  return out;
}
