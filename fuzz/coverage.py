#!/usr/bin/env python3
"""Edge coverage per source file of our code, from libFuzzer's
-print_coverage=1 output of the targets replaying their corpora
(scripts/fuzz.sh coverage runs them and pipes the output here).

Prints, per file of ours, the edges the corpora reach of the edges in the
functions the targets link, and the functions they never enter.
"""

import collections
import re
import sys

LINE = re.compile(r'^(COVERED|UNCOVERED)_FUNC: hits: \d+ edges: (\d+)/(\d+) '
                  r'(\S+) (\S+):\d+')

edges = collections.defaultdict(dict)     # file -> func -> (covered, total)
for line in sys.stdin:
    m = LINE.match(line)
    if not m:
        continue
    kind, covered, total, func, path = m.groups()
    if '/fuzz/' in path or '/nginx-' in path or 'ngx_chat_module' not in path \
            and 'common/' not in path and 'ngx_asset_module' not in path:
        continue
    path = re.sub(r'^.*?/(ngx_chat_module|common|ngx_asset_module)/',
                  r'\1/', path)
    c, t = edges[path].get(func, (0, 0))
    # the best of the targets that link it
    edges[path][func] = (max(c, int(covered)), max(t, int(total)))

print('%-48s %7s %7s %6s  %s' % ('file', 'edges', 'of', '%', 'never entered'))
for path in sorted(edges):
    funcs = edges[path]
    c = sum(v[0] for v in funcs.values())
    t = sum(v[1] for v in funcs.values())
    never = sorted(f for f, v in funcs.items() if v[0] == 0)
    print('%-48s %7d %7d %5.0f%%  %s' % (path, c, t, 100.0 * c / max(t, 1),
                                         ', '.join(never)))
