"""Validates SPDX documents with the SPDX project's own Python tools (`spdx-tools`): parsed as SPDX 2.3 JSON
and checked by its full document validator.

    python3 validate_spdx.py DOCUMENT.json...

Exit 0 and print {"validated": N}; exit 1 and print each problem on stderr.
"""

import json
import sys

from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

problems = []
for path in sys.argv[1:]:
    document = parse_file(path)
    if document.creation_info.spdx_version != "SPDX-2.3":
        problems.append(f"{path}: {document.creation_info.spdx_version}, not SPDX-2.3")
    for message in validate_full_spdx_document(document, spdx_version="SPDX-2.3"):
        problems.append(f"{path}: {message.validation_message} ({message.context})")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
json.dump({"validated": len(sys.argv) - 1}, sys.stdout)
