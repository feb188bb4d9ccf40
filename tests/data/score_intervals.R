# Reference values for loopexp/stats/score.py, computed independently of its closed forms:
# the ML rates under H0 come from numerical maximisation of the binomial log-likelihood
# (stats::optimize), the bounds from stats::uniroot on the score statistic (Mee 1984 for the
# difference, Koopman 1984 for the ratio; Miettinen-Nurminen without the N/(N-1) factor).
# At H0 "no difference" the statistic is the pooled z of prop.test(correct = FALSE).
# Run: Rscript tests/data/score_intervals.R > tests/data/score_intervals.json
loglik <- function(pt, pc, xt, nt, xc, nc) {
  ll <- function(x, n, p) {
    a <- if (x > 0) x * log(p) else 0
    b <- if (n - x > 0) (n - x) * log(1 - p) else 0
    a + b
  }
  ll(xt, nt, pt) + ll(xc, nc, pc)
}
tiny <- 1e-15
z_diff <- function(delta, xt, nt, xc, nc) {
  lo <- max(0, -delta) + tiny; hi <- min(1, 1 - delta) - tiny
  pc <- optimize(function(p) loglik(p + delta, p, xt, nt, xc, nc), c(lo, hi),
                 maximum = TRUE, tol = 1e-14)$maximum
  pt <- pc + delta
  (xt / nt - xc / nc - delta) / sqrt(pt * (1 - pt) / nt + pc * (1 - pc) / nc)
}
z_ratio <- function(r, xt, nt, xc, nc) {
  hi <- min(1, 1 / r) - tiny
  pc <- optimize(function(p) loglik(r * p, p, xt, nt, xc, nc), c(tiny, hi),
                 maximum = TRUE, tol = 1e-14)$maximum
  pt <- r * pc
  (xt / nt - r * xc / nc) / sqrt(pt * (1 - pt) / nt + r^2 * pc * (1 - pc) / nc)
}
root <- function(f, lo, hi) uniroot(f, c(lo, hi), tol = 1e-13)$root
cases <- list(
  c(7, 34, 1, 34), c(200, 5000, 180, 5000), c(0, 20, 2, 20), c(2, 20, 0, 20),
  c(3, 3, 3, 3), c(0, 20, 0, 20), c(15, 60, 6, 80), c(10, 5000, 22, 5000), c(56, 70, 48, 80)
)
alphas <- c(0.05, 0.01)
out <- c()
for (cs in cases) for (alpha in alphas) {
  xt <- cs[1]; nt <- cs[2]; xc <- cs[3]; nc <- cs[4]
  q <- qnorm(1 - alpha / 2)
  est <- xt / nt - xc / nc
  e <- 1e-9
  fd <- function(d, target) z_diff(d, xt, nt, xc, nc) - target
  dlo <- if (fd(-1 + e, q) <= 0) -1 else root(function(d) fd(d, q), -1 + e, est)
  dhi <- if (fd(1 - e, -q) >= 0) 1 else root(function(d) fd(d, -q), est, 1 - e)
  fr <- function(lr, target) z_ratio(exp(lr), xt, nt, xc, nc) - target
  rlo <- if (xt == 0) 0 else exp(root(function(lr) fr(lr, q), -30, 30))
  rhi <- if (xc == 0) Inf else exp(root(function(lr) fr(lr, -q), -30, 30))
  pt <- prop.test(c(xt, xc), c(nt, nc), correct = FALSE)$p.value
  if (is.na(pt)) pt <- 1
  fmt <- function(x) if (is.infinite(x)) '"inf"' else sprintf("%.12g", x)
  out <- c(out, sprintf(
    '{"x_t": %d, "n_t": %d, "x_c": %d, "n_c": %d, "alpha": %g, "p_value": %s, "diff_ci": [%s, %s], "ratio_ci": [%s, %s]}',
    xt, nt, xc, nc, alpha, fmt(pt), fmt(dlo), fmt(dhi), fmt(rlo), fmt(rhi)))
}
cat("[\n", paste(out, collapse = ",\n"), "\n]\n", sep = "")
