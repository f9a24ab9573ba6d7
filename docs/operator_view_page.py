"""Write the HTML page whose screenshot is docs/operator-view.png (the notebook display).

Run ``python docs/operator_view_page.py /tmp/views.html``, then ``chromium --headless --no-sandbox
--disable-gpu --hide-scrollbars --window-size=900,925 --screenshot=docs/operator-view.png
file:///tmp/views.html``.
"""

import sys

import numpy as np

import stridedop

rng = np.random.default_rng(0)
W = stridedop.conv_view(rng.standard_normal((3, 3, 16, 16)), (32, 32, 16), padding="same", stride=2)
op = stridedop.ConvOperator(rng.standard_normal((3, 3, 4, 8)), (12, 12, 8), padding="circular", groups=2)
A = stridedop.convolution_matrix(rng.standard_normal(9), 60, mode="same")
style = (
    "body{font-family:sans-serif;font-size:13px;margin:16px} table{border-collapse:collapse} "
    "th,td{padding:2px 8px;border-bottom:1px solid #ddd} h3{font-family:monospace}"
)
sections = [
    ('W = stridedop.conv_view(K, (32, 32, 16), padding="same", stride=2)', W),
    ('op = stridedop.ConvOperator(K, (12, 12, 8), padding="circular", groups=2)', op),
    ('A = stridedop.convolution_matrix(a, 60, mode="same")', A),
]
body = "".join(f"<h3>{title}</h3>{shown._repr_html_()}" for title, shown in sections)
head = f"<head><meta charset='utf-8'><style>{style}</style></head>"
page = f"<!doctype html><html>{head}<body>{body}</body></html>"
with open(sys.argv[1], "w", encoding="utf-8") as file:
    file.write(page)
