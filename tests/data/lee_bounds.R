# Reference values for loopexp/stats/lee.py (Lee 2009 trimming bounds, 0/1 outcome), computed
# independently of its closed form: each arm is expanded into one outcome per unit (NA when not
# observed), the arm with the higher observed share has its observed outcomes sorted and
# literally trimmed by p = 1 - q_low / q_high from the top (lower bound) and from the bottom
# (upper bound), the last unit kept with its fractional weight; the standard errors use the
# analytic derivatives of the bounds in the multinomial shares (delta method), not differences.
# Run: Rscript tests/data/lee_bounds.R > tests/data/lee_bounds.json
cases <- list(
  list(name = "trim treatment", yt = 1150, st = 5600, nt = 10000, yc = 1000, sc = 5500, nc = 10000),
  list(name = "trim control", yt = 700, st = 4300, nt = 8000, yc = 760, sc = 4600, nc = 8200),
  list(name = "equal selection", yt = 600, st = 2700, nt = 5000, yc = 500, sc = 2700, nc = 5000),
  list(name = "small arms", yt = 8, st = 20, nt = 40, yc = 5, sc = 30, nc = 50),
  list(name = "clipped at 0", yt = 60, st = 62, nt = 100, yc = 10, sc = 80, nc = 100),
  list(name = "clipped at 1", yt = 45, st = 50, nt = 100, yc = 30, sc = 40, nc = 100)
)
alpha <- 0.05

units <- function(yes, seen, n) c(rep(1, yes), rep(0, seen - yes), rep(NA, n - seen))

trimmed_mean <- function(y, keep) {  # mean of the first `keep` (a share) of y, fractional last
  k <- keep * length(y)
  full <- floor(k)
  frac <- k - full
  total <- if (full > 0) sum(y[seq_len(full)]) else 0
  if (frac > 0) total <- total + frac * y[full + 1]
  total / k
}

trimmed <- function(yes, seen, n, q_low) {  # (lower, upper) mean of the always-observed
  y <- units(yes, seen, n)
  obs <- y[!is.na(y)]
  keep <- q_low / (length(obs) / n)
  c(trimmed_mean(sort(obs), keep), trimmed_mean(sort(obs, decreasing = TRUE), keep))
}

bounds <- function(cs) {
  t <- units(cs$yt, cs$st, cs$nt); c <- units(cs$yc, cs$sc, cs$nc)
  qt <- mean(!is.na(t)); qc <- mean(!is.na(c))
  if (qt >= qc) {
    tb <- trimmed(cs$yt, cs$st, cs$nt, qc); yc <- mean(c, na.rm = TRUE)
    list(d = c(tb[1] - yc, tb[2] - yc), r = c(tb[1] / yc - 1, tb[2] / yc - 1))
  } else {
    cb <- trimmed(cs$yc, cs$sc, cs$nc, qt); yt <- mean(t, na.rm = TRUE)
    rh <- if (cb[1] > 0) yt / cb[1] - 1 else Inf
    list(d = c(yt - cb[2], yt - cb[1]), r = c(yt / cb[2] - 1, rh))
  }
}

gradients <- function(rt, zt, rc, zc) {  # d(bound)/d(rt, zt, rc, zc), analytic
  qt <- rt + zt; qc <- rc + zc; zero <- c(0, 0, 0, 0)
  if (qt >= qc) {
    hi <- rt / qc; g_hi <- c(1 / qc, 0, -rt / qc^2, -rt / qc^2)
    if (hi > 1) { hi <- 1; g_hi <- zero }
    lo <- 1 - zt / qc; g_lo <- c(0, -1 / qc, zt / qc^2, zt / qc^2)
    if (lo < 0) { lo <- 0; g_lo <- zero }
    y <- rc / qc; g_y <- c(0, 0, 1 / qc - rc / qc^2, -rc / qc^2)
    list(dl = g_lo - g_y, dh = g_hi - g_y,
         rl = g_lo / y - lo * g_y / y^2, rh = g_hi / y - hi * g_y / y^2)
  } else {
    hi <- rc / qt; g_hi <- c(-rc / qt^2, -rc / qt^2, 1 / qt, 0)
    if (hi > 1) { hi <- 1; g_hi <- zero }
    lo <- 1 - zc / qt; g_lo <- c(zc / qt^2, zc / qt^2, 0, -1 / qt)
    if (lo < 0) { lo <- 0; g_lo <- zero }
    y <- rt / qt; g_y <- c(1 / qt - rt / qt^2, -rt / qt^2, 0, 0)
    rh <- if (lo > 0) g_y / lo - y * g_lo / lo^2 else c(NA, NA, NA, NA)
    list(dl = g_y - g_hi, dh = g_y - g_lo, rl = g_y / hi - y * g_hi / hi^2, rh = rh)
  }
}

num <- function(x) if (is.na(x)) "null" else if (is.infinite(x)) "null" else sprintf("%.15g", x)

out <- character(0)
for (cs in cases) {
  b <- bounds(cs)
  rt <- cs$yt / cs$nt; zt <- (cs$st - cs$yt) / cs$nt
  rc <- cs$yc / cs$nc; zc <- (cs$sc - cs$yc) / cs$nc
  v_t <- matrix(c(rt * (1 - rt), -rt * zt, -rt * zt, zt * (1 - zt)), 2) / cs$nt
  v_c <- matrix(c(rc * (1 - rc), -rc * zc, -rc * zc, zc * (1 - zc)), 2) / cs$nc
  v <- rbind(cbind(v_t, matrix(0, 2, 2)), cbind(matrix(0, 2, 2), v_c))
  g <- gradients(rt, zt, rc, zc)
  se <- sapply(g, function(x) sqrt(drop(t(x) %*% v %*% x)))
  q <- qnorm(1 - alpha / 2)
  qt <- cs$st / cs$nt; qc <- cs$sc / cs$nc
  fields <- c(
    sprintf('"name": "%s"', cs$name),
    sprintf('"counts": [%d, %d, %d, %d, %d, %d]', cs$yt, cs$st, cs$nt, cs$yc, cs$sc, cs$nc),
    sprintf('"diff_low": %s', num(b$d[1])), sprintf('"diff_high": %s', num(b$d[2])),
    sprintf('"rel_low": %s', num(b$r[1])), sprintf('"rel_high": %s', num(b$r[2])),
    sprintf('"ci_low": %s', num(b$d[1] - q * se[["dl"]])),
    sprintf('"ci_high": %s', num(b$d[2] + q * se[["dh"]])),
    sprintf('"rel_ci_low": %s', num(b$r[1] - q * se[["rl"]])),
    sprintf('"rel_ci_high": %s', num(b$r[2] + q * se[["rh"]])),
    sprintf('"trimmed_share": %s', num(1 - min(qt, qc) / max(qt, qc))),
    sprintf('"trimmed_arm": "%s"', if (qt >= qc) "treatment" else "control")
  )
  out <- c(out, paste0("  {", paste(fields, collapse = ", "), "}"))
}
cat("[\n", paste(out, collapse = ",\n"), "\n]\n", sep = "")
