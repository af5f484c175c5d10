/**
 * The flat TOML the `lap` CLI writes for its config and credentials files: top-level
 * `key = value` lines, values basic strings (`"…"` with TOML's escapes), literal strings (`'…'`),
 * booleans or integers, comments and blank lines. Anything else (tables, arrays, multi-line
 * strings) is refused with the line it is on, so a file the CLI would not read is not half-read
 * here. A dependency-free reader, since the SDK has no runtime dependencies.
 */

export type TomlValue = string | boolean | number;

const KEY = /^([A-Za-z0-9_-]+|"[^"\\]*")\s*=\s*/;

/** The keys and values of a flat TOML document; throws an `Error` naming the bad line. */
export function parseFlatToml(text: string): Record<string, TomlValue> {
  const out: Record<string, TomlValue> = {};
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `line ${index + 1}`;
    const key = KEY.exec(line);
    if (!key?.[1]) throw new Error(`${where}: expected \`key = value\`, found \`${line.slice(0, 80)}\``);
    const name = key[1].startsWith('"') ? key[1].slice(1, -1) : key[1];
    if (Object.prototype.hasOwnProperty.call(out, name)) throw new Error(`${where}: \`${name}\` is set twice`);
    const [value, rest] = parseValue(line.slice(key[0].length), where);
    const trailing = rest.trim();
    if (trailing !== "" && !trailing.startsWith("#")) throw new Error(`${where}: unexpected \`${trailing.slice(0, 40)}\` after the value`);
    out[name] = value;
  });
  return out;
}

function parseValue(text: string, where: string): [TomlValue, string] {
  if (text.startsWith('"""') || text.startsWith("'''")) throw new Error(`${where}: multi-line strings are not supported here`);
  if (text.startsWith('"')) return basicString(text, where);
  if (text.startsWith("'")) {
    const end = text.indexOf("'", 1);
    if (end < 0) throw new Error(`${where}: unterminated string`);
    return [text.slice(1, end), text.slice(end + 1)];
  }
  const word = /^(true|false|[+-]?[0-9][0-9_]*)(?=\s|#|$)/.exec(text);
  if (!word?.[1]) throw new Error(`${where}: unsupported value \`${text.slice(0, 40)}\` (a string needs quotes)`);
  const value = word[1];
  if (value === "true" || value === "false") return [value === "true", text.slice(value.length)];
  return [Number(value.replace(/_/g, "")), text.slice(value.length)];
}

const ESCAPES: Record<string, string> = { b: "\b", t: "\t", n: "\n", f: "\f", r: "\r", '"': '"', "\\": "\\" };

function basicString(text: string, where: string): [string, string] {
  let out = "";
  for (let i = 1; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === '"') return [out, text.slice(i + 1)];
    if (ch !== "\\") {
      out += ch;
      continue;
    }
    const next = text[i + 1] ?? "";
    if (next in ESCAPES) {
      out += ESCAPES[next];
      i += 1;
    } else if (next === "u" || next === "U") {
      const width = next === "u" ? 4 : 8;
      const hex = text.slice(i + 2, i + 2 + width);
      if (!/^[0-9A-Fa-f]+$/.test(hex) || hex.length !== width) throw new Error(`${where}: bad \\${next} escape`);
      out += String.fromCodePoint(parseInt(hex, 16));
      i += 1 + width;
    } else {
      throw new Error(`${where}: bad escape \`\\${next}\``);
    }
  }
  throw new Error(`${where}: unterminated string`);
}
