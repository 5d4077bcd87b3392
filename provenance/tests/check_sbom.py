"""An independent check of an SPDX 2.3 document against a .tar.gz archive, with Python's tarfile and
hashlib: every regular file of the archive (a hard link counts as the file it names) must be listed with its
path relative to the archive root ("./path") and its SHA256 and SHA1, and nothing else; the described
package's SHA256 must be the archive's.

    python3 check_sbom.py SBOM.json ARCHIVE.tar.gz

Exit 0 and print {"files": N} when they match; exit 1 and list the differences on stderr otherwise.
"""

import hashlib
import json
import sys
import tarfile


def clean(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise ValueError(f"{path!r} leaves the archive root")
    return "/".join(parts)


def archive_files(path: str) -> dict:
    files = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            name = clean(member.name)
            if not name:
                continue
            if member.isreg():
                data = archive.extractfile(member).read()
                files[name] = (hashlib.sha256(data).hexdigest(), hashlib.sha1(data).hexdigest())
            elif member.islnk():
                files[name] = files[clean(member.linkname)]
            else:
                files.pop(name, None)
    return files


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1], "rb") as f:
        document = json.load(f)
    problems = []
    if document.get("spdxVersion") != "SPDX-2.3":
        problems.append(f"spdxVersion is {document.get('spdxVersion')!r}")
    listed = {}
    for entry in document.get("files", []):
        name = entry["fileName"]
        if not name.startswith("./"):
            problems.append(f"{name!r} does not start with ./")
        sums = {c["algorithm"]: c["checksumValue"] for c in entry["checksums"]}
        listed[clean(name)] = (sums.get("SHA256"), sums.get("SHA1"))
    found = archive_files(sys.argv[2])
    for name in sorted(set(listed) | set(found)):
        if name not in found:
            problems.append(f"{name} is in the SBOM, not in the archive")
        elif name not in listed:
            problems.append(f"{name} is in the archive, not in the SBOM")
        elif listed[name] != found[name]:
            problems.append(f"{name}: SBOM {listed[name]}, archive {found[name]}")

    with open(sys.argv[2], "rb") as f:
        archive_sha256 = hashlib.sha256(f.read()).hexdigest()
    described = [r["relatedSpdxElement"] for r in document.get("relationships", [])
                 if r["spdxElementId"] == "SPDXRef-DOCUMENT" and r["relationshipType"] == "DESCRIBES"]
    packages = [p for p in document.get("packages", []) if p["SPDXID"] in described]
    if len(packages) != 1:
        problems.append(f"the document describes {len(packages)} packages")
    else:
        sums = {c["algorithm"]: c["checksumValue"] for c in packages[0].get("checksums", [])}
        if sums.get("SHA256") != archive_sha256:
            problems.append(f"the package's SHA256 is {sums.get('SHA256')}, the archive's {archive_sha256}")
        code = packages[0].get("packageVerificationCode", {}).get("packageVerificationCodeValue")
        expected = hashlib.sha1("".join(sorted(s for _, s in found.values())).encode()).hexdigest()
        if code != expected:
            problems.append(f"the package verification code is {code}, the files give {expected}")

    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    json.dump({"files": len(found)}, sys.stdout)


main()
