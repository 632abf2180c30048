# roofline.gp - a log-log roofline: the run's measured ceilings (lines) and each (case,
# variant) at its arithmetic intensity (SPEC.md cost model FLOPs / bytes) and achieved TFLOP/s.
# Variables: dat, ttl, nc (ceilings), nv (variants), labels (1: name each point), xmin, xmax,
# ymin, ymax, array ct[nc], array vt[nv]; and common.gp's.
# dat: blocks 0..nc-1 the ceilings (x y polylines); blocks nc..nc+nv-1 the points (x y "case").
load scripts.'/common.gp'
set title ttl
set xlabel 'arithmetic intensity (FLOP / byte)'
set ylabel 'TFLOP/s'
set logscale xy
set format x '%g'
set format y '%g'
set xrange [xmin:xmax]
set yrange [ymin:ymax]
set grid xtics ytics lc rgb '#dddddd'
set key outside right top
plot for [i=0:nc-1] dat index i using 1:2 with lines lw 2 dt i+1 lc rgb '#303030' title ct[i+1], \
     for [i=0:nv-1] dat index nc+i using 1:2 with points pt (i % 6) + 5 ps 1.3 lc i+1 \
         title vt[i+1], \
     for [k=1:labels] for [i=0:nv-1] dat index nc+i using 1:2:3 with labels left \
         offset 0.6,0.3 font ',6' textcolor rgb '#606060' notitle
