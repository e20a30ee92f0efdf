# Written for this project's tests (Apache-2.0): parse each message file given as an argument
# with Python's `email` package (policy.default) and print, as JSON, per message: the defects
# of every part, the decoded text/plain and text/html bodies, the header fields, and every
# part's content type with its file name ("" when none).
import email
import email.policy
import json
import sys

out = []
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)
    defects = [f"{type(d).__name__}" for d in msg.defects]
    texts, htmls, parts = [], [], []
    for part in msg.walk():
        parts.append([part.get_content_type(), part.get_filename() or ""])
        defects += [f"{part.get_content_type()}: {type(d).__name__}" for d in part.defects]
        if part.is_multipart():
            continue
        ct = part.get_content_type()
        if ct == "text/plain":
            texts.append(part.get_content())
        elif ct == "text/html":
            htmls.append(part.get_content())
    out.append({"defects": defects, "text": "\n".join(texts), "html": "\n".join(htmls),
                "headers": [[k, str(v)] for k, v in msg.items()], "parts": parts})
print(json.dumps(out))
