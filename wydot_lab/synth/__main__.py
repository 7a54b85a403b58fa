"""`python -m wydot_lab.synth PARAMS OUT`: write the params file's corpus, print its summary as JSON."""

import json
import sys

from wydot_lab.synth.corpus import write_from_params

if __name__ == "__main__":
    print(json.dumps(write_from_params(sys.argv[1], sys.argv[2])))
