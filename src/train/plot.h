/* plot.h - a loss curve as a self-contained SVG file (no dependencies). */
#ifndef FLOWHN_PLOT_H
#define FLOWHN_PLOT_H

typedef struct { const char *label; const char *color; const double *x, *y; int n; } PlotSeries;

/* Writes an SVG line chart of the series; horizontal lines for `hlines`
 * (e.g. a baseline) with their labels. 0 or -1 with fh_error. */
int plot_svg(const char *path, const char *title, const char *xlabel, const char *ylabel, const PlotSeries *s,
             int n_series, const double *hlines, const char *const *hline_labels, int n_hlines);

#endif
