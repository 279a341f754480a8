/* plot.c - SVG line charts for loss curves. */
#include "plot.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../core/error.h"

int plot_svg(const char *path, const char *title, const char *xlabel, const char *ylabel, const PlotSeries *s,
             int n_series, const double *hlines, const char *const *hline_labels, int n_hlines) {
    const double W = 720, Hh = 440, l = 70, r = 20, t = 40, b = 55;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int k = 0; k < n_series; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (!isfinite(s[k].y[i])) continue;
            x0 = fmin(x0, s[k].x[i]); x1 = fmax(x1, s[k].x[i]);
            y0 = fmin(y0, s[k].y[i]); y1 = fmax(y1, s[k].y[i]);
        }
    for (int k = 0; k < n_hlines; k++) { y0 = fmin(y0, hlines[k]); y1 = fmax(y1, hlines[k]); }
    if (!isfinite(x0)) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
    if (x1 <= x0) x1 = x0 + 1;
    if (y1 <= y0) y1 = y0 + 1;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad; y1 += pad;
    FILE *f = fopen(path, "w");
    if (!f) return fh_error("cannot write plot %s: %s", path, strerror(errno));
#define PX(v) (l + ((v) - x0) / (x1 - x0) * (W - l - r))
#define PY(v) (Hh - b - ((v) - y0) / (y1 - y0) * (Hh - t - b))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, Hh);
    fprintf(f, "<text x=\"%g\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">%s</text>\n", W / 2, title);
    for (int i = 0; i <= 5; i++) {   /* grid and tick labels */
        double yv = y0 + (y1 - y0) * i / 5, xv = x0 + (x1 - x0) * i / 5;
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", l, PY(yv), W - r, PY(yv));
        fprintf(f, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", l - 6, PY(yv) + 4, yv);
        fprintf(f, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%.4g</text>\n", PX(xv), Hh - b + 18, xv);
    }
    fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n", l, t,
            W - l - r, Hh - t - b);
    fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", (l + W - r) / 2, Hh - 12, xlabel);
    fprintf(f, "<text x=\"16\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 16 %g)\">%s</text>\n",
            (t + Hh - b) / 2, (t + Hh - b) / 2, ylabel);
    for (int k = 0; k < n_hlines; k++) {
        fprintf(f, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#888\" stroke-dasharray=\"6 4\"/>\n", l,
                PY(hlines[k]), W - r, PY(hlines[k]));
        fprintf(f, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\" fill=\"#555\">%s</text>\n", W - r - 4,
                PY(hlines[k]) - 4, hline_labels[k]);
    }
    for (int k = 0; k < n_series; k++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", s[k].color);
        for (int i = 0; i < s[k].n; i++)
            if (isfinite(s[k].y[i])) fprintf(f, "%.1f,%.1f ", PX(s[k].x[i]), PY(s[k].y[i]));
        fprintf(f, "\"/>\n");
        fprintf(f, "<rect x=\"%g\" y=\"%g\" width=\"14\" height=\"3\" fill=\"%s\"/><text x=\"%g\" y=\"%g\">%s</text>\n",
                l + 12, t + 14 + 16 * k, s[k].color, l + 32, t + 19 + 16 * k, s[k].label);
    }
    fprintf(f, "</svg>\n");
#undef PX
#undef PY
    if (fclose(f)) return fh_error("cannot write plot %s: %s", path, strerror(errno));
    return 0;
}
