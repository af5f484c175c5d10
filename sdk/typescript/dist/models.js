// The shapes of lap's REST API, generated from its OpenAPI document (`GET /api/v1/openapi.json`)
// by scripts/gen-models.mjs. Do not edit: `npm run gen -- URL` rewrites this file, and
// tests/openapi.test.ts fails when it differs from what a live server's document gives.
//
// Field names are the API's own (snake_case, and `sessionID` where opencode's shape has it);
// an optional field may be left out by the server.
export {};
