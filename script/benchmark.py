"""Speed and quality benchmark, the command users call: the sections and their flags live
in bench/runner.py (``python script/benchmark.py --help`` lists them).

    python script/benchmark.py                 # full run (~1.5 h on 2 CPU cores)
    python script/benchmark.py --quick         # 2-minute smoke version
    python script/benchmark.py --sections=throughput,detectors
"""

import sys

from bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
