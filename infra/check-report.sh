#!/usr/bin/env bash
# Opens the campaign report (out/report/index.html by default) in headless Chromium, as a
# person's browser would render it, and checks the rendered page: a chart (an <svg> with a
# bar per group) and a table (a row per group) for every campaign section.
#
# Needs Chromium from the distribution's packages (Debian: `apt-get install chromium`);
# `make demo` runs this when /usr/bin/chromium (or $CHROMIUM) exists.
set -euo pipefail
REPORT=${1:-out/report/index.html}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
  echo "check-report: no Chromium (apt-get install chromium), not checked" >&2
  exit 2
fi
[ -f "$REPORT" ] || { echo "check-report: $REPORT not found" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# The flags keep Chromium off the network (this machine has none) and out of the sandbox
# (root in a container); --dump-dom prints the DOM after the page has loaded.
dom=$("$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --dump-dom "file://$(realpath "$REPORT")" 2>/dev/null)
python3 - "$dom" <<'PY'
import sys
from html.parser import HTMLParser

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.stack = [], []
    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.sections.append({"id": dict(attrs).get("id"), "svg": 0, "bars": 0, "rows": 0})
        elif self.sections:
            s = self.sections[-1]
            if tag == "svg":
                s["svg"] += 1
            elif tag == "rect":
                s["bars"] += 1
            elif tag == "tr":
                s["rows"] += 1

page = Page()
page.feed(sys.argv[1])
bad = [s for s in page.sections if s["svg"] != 1 or s["bars"] < 1 or s["rows"] < s["bars"] + 1]
if not page.sections or bad:
    print(f"check-report: rendered page lacks a chart or a table: {bad or 'no campaign section'}")
    sys.exit(1)
print(f"check-report: Chromium rendered {len(page.sections)} campaign reports, each with a chart "
      f"and a table ({', '.join(s['id'] + ': ' + str(s['bars']) + ' groups' for s in page.sections)})")
PY
