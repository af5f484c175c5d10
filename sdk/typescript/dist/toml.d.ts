/**
 * The flat TOML the `lap` CLI writes for its config and credentials files: top-level
 * `key = value` lines, values basic strings (`"…"` with TOML's escapes), literal strings (`'…'`),
 * booleans or integers, comments and blank lines. Anything else (tables, arrays, multi-line
 * strings) is refused with the line it is on, so a file the CLI would not read is not half-read
 * here. A dependency-free reader, since the SDK has no runtime dependencies.
 */
export type TomlValue = string | boolean | number;
/** The keys and values of a flat TOML document; throws an `Error` naming the bad line. */
export declare function parseFlatToml(text: string): Record<string, TomlValue>;
