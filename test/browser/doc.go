// Package browser loads the status page (pkg/status) of a running server
// with live triggers in headless Chromium (Debian's chromium package),
// driven over the Chrome DevTools protocol with a minimal client: it
// checks that the page renders the triggers table with the expected rows,
// that the browser reports no console error, exception or failed load, that
// the page fits a narrow window, and it saves full-page screenshots with
// t.ArtifactDir (kept under test/browser/out by `make browser-test`).
//
// It is a nested module because the websocket library the DevTools client
// needs is a test-only dependency.
package browser
