/**
 * Server-sent events, read line by line: the decoded JSON of each event's `data` (the lines of
 * one event joined with `\n`, as the format says). Comments (`:` lines, the server's keep-alive)
 * and other fields are skipped; `data` that is not JSON is an error naming it.
 */
/** The JSON `data` of each event in `lines`, in order. */
export declare function sseData(lines: AsyncIterable<string>): AsyncGenerator<unknown, void, undefined>;
