# speedup.gp - speedup bars on a log scale: groups along x (cases, or case/variant), one bar
# series per variant (per GPU for the figure across GPUs). Bars grow from 1 (the baseline):
# up when faster, down when slower; each is labelled with its value.
# Variables: dat, ttl, ns (series), ng (groups), nsep (path separators), npath (path labels),
# ymin, ymax, lm (left margin, characters), array st[ns] (series titles); and common.gp's.
# dat: blocks 0..ns-1 one per series (x speedup xlo xhi ylo yhi "label"); block ns the groups
# (x 1 "name"); then, when nsep/npath > 0, the separators (x) and the path labels (x "path"
# f, drawn at ymax/f: alternate heights keep the names of narrow groups apart).
load scripts.'/common.gp'
set title ttl
set ylabel 'speedup over simple (log scale)'
set logscale y
set yrange [ymin:ymax]
set xrange [-0.7:ng-0.3]
set xtics rotate by 40 right font ',8'
set lmargin lm
set key outside top center horizontal
set style fill solid 0.85 border rgb '#404040'
plot for [i=0:ns-1] dat index i using 1:2:3:4:5:6 with boxxyerror lc i+1 title st[i+1], \
     dat index ns using 1:2:xtic(3) with lines lc rgb 'black' dt 2 title 'baseline = 1', \
     for [i=0:ns-1] dat index i using 1:($2 >= 1 ? $6 : NaN):7 with labels rotate by 90 left \
         offset 0,0.4 font ',7' notitle, \
     for [i=0:ns-1] dat index i using 1:($2 < 1 ? $5 : NaN):7 with labels rotate by 90 right \
         offset 0,-0.4 font ',7' notitle, \
     for [k=1:(nsep > 0)] dat index ns+1 using 1:(ymin):(0):(ymax-ymin) with vectors nohead \
         lc rgb '#999999' notitle, \
     for [k=1:(npath > 0)] dat index ns+1+(nsep > 0) using 1:(ymax/$3):2 with labels \
         font ',10' textcolor rgb '#404040' notitle
