# common.gp - the terminal of every figure, loaded first by each plots/*.gp script.
# Variables (set by `attn-harness plot` with -e): fmt ('svg' or 'png'), w and h (pixels),
# out (the output name without extension). PNG: pngcairo where gnuplot has it, else libgd png.
# noenhanced: case and variant names hold underscores, which must not become subscripts.
if (fmt eq 'svg') {
    set terminal svg size w,h dynamic noenhanced font 'sans,11' background rgb 'white'
} else {
    if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
        set terminal pngcairo size w,h noenhanced font 'sans,10' background rgb 'white'
    } else {
        set terminal png size w,h noenhanced
    }
}
set output out.'.'.fmt
set encoding utf8
set border 3
set tics nomirror
set grid ytics lc rgb '#dddddd'
