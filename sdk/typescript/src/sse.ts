/**
 * Server-sent events, read line by line: the decoded JSON of each event's `data` (the lines of
 * one event joined with `\n`, as the format says). Comments (`:` lines, the server's keep-alive)
 * and other fields are skipped; `data` that is not JSON is an error naming it.
 */

import { LapError } from "./errors.js";

/** The JSON `data` of each event in `lines`, in order. */
export async function* sseData(lines: AsyncIterable<string>): AsyncGenerator<unknown, void, undefined> {
  let data: string[] = [];
  for await (const line of lines) {
    if (line === "") {
      if (data.length) {
        yield decode(data.join("\n"));
        data = [];
      }
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    if (field !== "data") continue;
    const value = colon < 0 ? "" : line.slice(colon + 1);
    data.push(value.startsWith(" ") ? value.slice(1) : value);
  }
  if (data.length) yield decode(data.join("\n"));
}

function decode(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new LapError(`an event of lap's stream is not JSON: ${text.slice(0, 200)}`, {
      hint: "is LAP_URL a lap server? `curl $LAP_URL/api/v1/health` says",
      cause: err,
    });
  }
}
