"""report/nec_curve.py's plot read back from its SVG: a curve from results.json (keys sorted as
text) is joined in order of NEC, and the fitted model is an open circle off the line."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from conceptlens.report.nec_curve import curve_points, nec_curve_svg

NS = {"s": "http://www.w3.org/2000/svg"}
# as results.json stores it: json.dumps(sort_keys=True) puts "10" and "20" before "2" and "3"
ROW = {"nec_curve": {"1": 0.40, "10": 0.70, "2": 0.50, "20": 0.75, "3": 0.55, "full": 0.45},
       "nec_curve_reached": {"1": 1.0, "10": 10.0, "2": 2.0, "20": 20.0, "3": 3.0, "full": 6.2}}


def test_points_are_in_order_of_nec_with_the_fitted_model_last():
    assert curve_points(ROW) == [(1.0, 0.40), (2.0, 0.50), (3.0, 0.55), (10.0, 0.70), (20.0, 0.75),
                                 (6.2, 0.45)]


def test_the_line_joins_the_protocol_points_left_to_right_and_the_fitted_point_stands_alone():
    svg = ET.fromstring(nec_curve_svg({"labo": ROW, "zero_shot": {}}))
    (line,) = svg.findall("s:polyline", NS)  # one method has a curve
    xs = [float(p.split(",")[0]) for p in line.get("points").split()]
    assert len(xs) == 5 and xs == sorted(xs)
    circles = svg.findall("s:circle", NS)
    fitted = [c for c in circles if c.get("fill") == "white"]
    assert len(circles) == 6 and len(fitted) == 1
    assert "NEC 6.2, top-1 45.0% (as fitted)" in fitted[0].find("s:title", NS).text
    assert f"{float(fitted[0].get('cx')):.1f}" not in line.get("points")
    assert nec_curve_svg({"zero_shot": {}}) == ""
