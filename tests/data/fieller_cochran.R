# Reference values for loopexp/stats/fieller.py and loopexp/stats/heterogeneity.py, from base R.
# Welch: stats::t.test (statistic, df, p-value, conf.int of the difference). Fieller: the roots of
# (m_t - R m_c)^2 = q^2 (s_t^2 + R^2 s_c^2), q = qt(1 - alpha/2, Welch df) (Fieller 1954), solved
# here with polyroot (not the closed form of the package). Cochran's Q: the fixed-effect
# heterogeneity statistic on log risk ratios, hand-coded (metafor's QE).
# Run: Rscript tests/data/fieller_cochran.R > tests/data/fieller_cochran.json
set.seed(42)
t_grp <- c(rep(0, 60), rlnorm(15, 3, 1))
c_grp <- c(rep(0, 62), rlnorm(13, 3, 1))
welch <- function(x, y, alpha) {
  tt <- t.test(x, y, conf.level = 1 - alpha)
  q <- qt(1 - alpha / 2, tt$parameter)
  mt <- mean(x); mc <- mean(y); s2t <- var(x) / length(x); s2c <- var(y) / length(y)
  roots <- sort(Re(polyroot(c(mt^2 - q^2 * s2t, -2 * mt * mc, mc^2 - q^2 * s2c))))
  sprintf(paste0('{"n_t": %d, "sum_t": %.15g, "sum_sq_t": %.15g, "n_c": %d, "sum_c": %.15g, ',
                 '"sum_sq_c": %.15g, "alpha": %g, "t": %.15g, "df": %.15g, "p_value": %.15g, ',
                 '"diff_ci": [%.15g, %.15g], "ratio_ci": [%.15g, %.15g]}'),
          length(x), sum(x), sum(x^2), length(y), sum(y), sum(y^2), alpha, tt$statistic,
          tt$parameter, tt$p.value, tt$conf.int[1], tt$conf.int[2], roots[1], roots[2])
}
x2 <- c(rep(0, 900), rlnorm(100, 2, 1.5)); y2 <- c(rep(0, 910), rlnorm(90, 2, 1.5))
# Cochran's Q over four segments: (x_t, n_t, x_c, n_c)
seg <- rbind(c(40, 2000, 30, 2000), c(15, 1500, 22, 1500), c(80, 3000, 60, 3000),
             c(5, 800, 4, 800))
y <- log((seg[, 1] / seg[, 2]) / (seg[, 3] / seg[, 4]))
v <- (1 - seg[, 1] / seg[, 2]) / seg[, 1] + (1 - seg[, 3] / seg[, 4]) / seg[, 3]
w <- 1 / v
Q <- sum(w * (y - sum(w * y) / sum(w))^2)
cat("{\"welch_fieller\": [", welch(t_grp, c_grp, 0.05), ",", welch(x2, y2, 0.01), "],\n",
    sprintf('"cochran": {"cells": [[40, 2000, 30, 2000], [15, 1500, 22, 1500], [80, 3000, 60, 3000], [5, 800, 4, 800]], "q": %.15g, "p_value": %.15g}}', Q, pchisq(Q, 3, lower.tail = FALSE)),
    "\n", sep = "")
