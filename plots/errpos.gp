# errpos.gp - error by position: one panel per (case, variant), the worst err/tol (headroom)
# per bucket of rows along the token axis, one step line per output; the emulated candidate
# dashed beside a GPU variant; crosses at the top where an element is non-finite or unwritten.
# Variables: dat, ttl, np (panels), cols, rows, ymin, ymax, arrays pt[np] (panel titles),
# xl[np] (x labels), pf[np] and pc[np] (each panel's first block and block count), st, sd, sc
# (per block: title, dashed 0/1, colour); and common.gp's.
# dat: one block per series: x (first row of the bucket) headroom nonfinite-marker.
load scripts.'/common.gp'
set multiplot layout rows,cols title ttl font ',12'
set logscale y
set yrange [ymin:ymax]
set format y '%g'
set ylabel 'err / tol'
set key top right font ',8' opaque
do for [p=1:np] {
    set title pt[p] font ',8'
    set xlabel xl[p] font ',8'
    plot for [i=pf[p]:pf[p]+pc[p]-1] dat index i using 1:2 with steps lw 1.5 lc sc[i+1] \
             dt 1+sd[i+1] title st[i+1], \
         for [i=pf[p]:pf[p]+pc[p]-1] dat index i using 1:3 with points pt 2 ps 0.8 lc rgb 'red' \
             notitle, \
         1 with lines lc rgb 'red' dt 3 title 'fails above 1'
}
unset multiplot
