#!/usr/bin/env python3
# Converts the openspf.org RFC 7208 test suite (rfc7208-tests.yml, release 2014.04, from pyspf
# 2.0.14; licence in rfc7208-tests.LICENSE) into rfc7208-tests.json, which SPFSuiteTests reads
# (Foundation reads JSON, not YAML). Run it after replacing the YAML:
#   python3 Tests/MailAuthTests/Data/rfc7208-tests-to-json.py
import json, os, yaml
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "rfc7208-tests.yml")) as f:
    scenarios = [s for s in yaml.safe_load_all(f) if s]
with open(os.path.join(here, "rfc7208-tests.json"), "w") as f:
    json.dump(scenarios, f, indent=1, sort_keys=True, ensure_ascii=False)
    f.write("\n")
