// The median tick-to-seen delay, in constant work and memory per quote however long the
// page stays open: delays are counted in 1 ms buckets up to LIMIT_MS (one more bucket
// holds the longer ones), and the median is a scan of those buckets, not a sort of every
// delay seen.
"use strict";

class DelayMedian {
  static LIMIT_MS = 10000;

  constructor() {
    this.counts = new Uint32Array(DelayMedian.LIMIT_MS + 2);
    this.total = 0;
  }

  // A delay in seconds; one below zero (clocks a little apart) counts as 0 ms.
  add(seconds) {
    const ms = Math.round(seconds * 1000);
    const bucket = ms > DelayMedian.LIMIT_MS ? DelayMedian.LIMIT_MS + 1 : Math.max(0, ms);
    this.counts[bucket] += 1;
    this.total += 1;
  }

  // The middle delay in ms (the upper one of an even count), Infinity when it is over
  // LIMIT_MS, null before the first.
  median() {
    if (this.total === 0) return null;
    const middle = Math.floor(this.total / 2);
    let seen = 0;
    for (let bucket = 0; bucket <= DelayMedian.LIMIT_MS; bucket += 1) {
      seen += this.counts[bucket];
      if (seen > middle) return bucket;
    }
    return Infinity;
  }
}
