// node:test reporter that keeps {passed, failed} in $GLITCH_TEST_COUNTS_FILE for
// test/run.ts's closing line. Written synchronously on every result, so a runner that is
// killed still leaves the count of what it reported.
// Suites are not counted (their tests are); a failing hook or file counts as a failure.
import { writeFileSync } from 'node:fs';

export default async function* countReporter(source) {
  const file = process.env.GLITCH_TEST_COUNTS_FILE;
  let passed = 0;
  let failed = 0;
  for await (const event of source) {
    const suite = event.data?.details?.type === 'suite';
    if (event.type === 'test:pass' && !suite) passed++;
    else if (event.type === 'test:fail' && (!suite || event.data.details?.error?.failureType !== 'subtestsFailed')) failed++;
    else continue;
    if (file) writeFileSync(file, JSON.stringify({ passed, failed }));
  }
  yield '';
}
