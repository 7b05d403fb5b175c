import assert from "node:assert/strict";
import { formatDuration, InvalidDurationError, parseDuration } from "../../../lib/duration.js";

describe("lib/duration", () => {
  it("parses seconds, minutes, hours and days", () => {
    assert.equal(parseDuration("90", 1, 1e9), 90);
    assert.equal(parseDuration("90s", 1, 1e9), 90);
    assert.equal(parseDuration("15m", 1, 1e9), 900);
    assert.equal(parseDuration(" 2h ", 1, 1e9), 7200);
    assert.equal(parseDuration("7d", 1, 1e9), 604800);
  });

  it("refuses garbage and values out of range with the range in the message", () => {
    for (const bad of ["", "1w", "-5m", "1.5h", "5 m", "h", "99999999d"]) {
      assert.throws(() => parseDuration(bad, 60, 86400), InvalidDurationError, bad);
    }
    assert.throws(() => parseDuration("30s", 60, 86400), /between 1m and 1d/);
    assert.throws(() => parseDuration("2d", 60, 86400), /between 1m and 1d/);
  });

  it("formats with the largest whole unit", () => {
    assert.equal(formatDuration(86400), "1d");
    assert.equal(formatDuration(5400), "90m");
    assert.equal(formatDuration(61), "61s");
  });
});
