// Underlying distribution matching for BCO (Jung et al. 2024, arXiv 2404.04656, §4); TRL experimental/bco _get_udm_weight.
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace FineAlign.Objectives;

/// <summary>
/// A logistic-regression classifier p(desirable | prompt embedding), used to reweight thumbs-down
/// examples by the density ratio p/(1 − p) so the two sides look as if drawn from one prompt
/// distribution. Fit on at most <c>maxPerSide</c> prompts per side, class-balanced (each side has
/// total weight ½), L2-regularised, on standardised features, by Newton's method with backtracking
/// (the problem is convex and small, so this converges in a few iterations without a learning rate).
/// </summary>
public sealed class Udm
{
    public const double MinWeight = 0.5;
    public const double MaxWeight = 10;
    public const int DefaultMaxPerSide = 1024;

    private readonly double[] _center, _scale, _coef;

    private Udm(double[] center, double[] scale, double[] coef, double bias, int iterations)
    {
        _center = center; _scale = scale; _coef = coef; Bias = bias; Iterations = iterations;
    }

    /// <summary>Embedding size D.</summary>
    public int Dimension => _coef.Length;

    /// <summary>Intercept of the fitted classifier (in standardised feature space).</summary>
    public double Bias { get; }

    /// <summary>Newton iterations the fit took.</summary>
    public int Iterations { get; }

    /// <summary>Coefficients in standardised feature space (a copy).</summary>
    public double[] Coefficients => (double[])_coef.Clone();

    /// <param name="desirableEmbeddings">[N_d, D] prompt embeddings of thumbs-up examples.</param>
    /// <param name="undesirableEmbeddings">[N_u, D] prompt embeddings of thumbs-down examples.</param>
    /// <param name="l2">λ in (λ/2)‖w‖² added to the class-balanced mean log-loss (intercept unpenalised).</param>
    /// <param name="maxPerSide">At most this many prompts per side are used (a seeded random subset).</param>
    /// <param name="seed">Seed of that subset.</param>
    /// <param name="maxIterations">Newton iteration cap.</param>
    public static Udm Fit(Tensor desirableEmbeddings, Tensor undesirableEmbeddings, double l2 = 1e-3,
                          int maxPerSide = DefaultMaxPerSide, long seed = 0, int maxIterations = 100)
    {
        ObjectiveChecks.Positive(l2, "UDM l2");
        if (maxPerSide < 1) throw new FineAlignException($"UDM needs at least 1 prompt per side, got maxPerSide={maxPerSide}");
        CheckEmbeddings(desirableEmbeddings, "desirable embeddings", -1);
        long d = desirableEmbeddings.shape[1];
        CheckEmbeddings(undesirableEmbeddings, "undesirable embeddings", d);

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var gen = new Generator((ulong)seed);
        var pos = Sample(desirableEmbeddings, maxPerSide, gen);
        var neg = Sample(undesirableEmbeddings, maxPerSide, gen);
        long nPos = pos.shape[0], nNeg = neg.shape[0];

        var raw = cat(new[] { pos, neg }, 0);
        var center = raw.mean(new long[] { 0 });
        var scale = raw.std(0, unbiased: false).clamp_min(1e-6);
        var x = cat(new[] { (raw - center) / scale, ones(nPos + nNeg, 1, dtype: ScalarType.Float64) }, 1); // last column = intercept
        var y = cat(new[] { ones(nPos, dtype: ScalarType.Float64), zeros(nNeg, dtype: ScalarType.Float64) });
        var s = cat(new[] { full(nPos, 0.5 / nPos, dtype: ScalarType.Float64), full(nNeg, 0.5 / nNeg, dtype: ScalarType.Float64) });
        var penalty = ones(d + 1, dtype: ScalarType.Float64) * l2;
        penalty[d] = tensor(0.0, dtype: ScalarType.Float64);

        Tensor Objective(Tensor th)
        {
            var z = x.matmul(th);
            return (s * (F.softplus(z) - y * z)).sum() + 0.5 * (penalty * th.square()).sum();
        }

        var theta = zeros(d + 1, dtype: ScalarType.Float64);
        var identity = eye(d + 1, dtype: ScalarType.Float64);
        int it = 0;
        for (; it < maxIterations; it++)
        {
            var p = x.matmul(theta).sigmoid();
            var grad = x.t().matmul(s * (p - y)) + penalty * theta;
            if (grad.abs().max().item<double>() < 1e-10) break;
            var hess = (x.t() * (s * p * (1 - p))).matmul(x) + penalty.diag() + 1e-10 * identity;
            var step = linalg.solve(hess, grad);
            double decrement = grad.dot(step).item<double>();
            if (decrement < 1e-14) break;
            double j0 = Objective(theta).item<double>(), t = 1;
            var next = theta - step;
            while (Objective(next).item<double>() > j0 - 1e-4 * t * decrement && t > 1e-8)
            {
                t *= 0.5;
                next = theta - t * step;
            }
            theta = next;
        }

        var th = theta.data<double>().ToArray();
        return new Udm(center.data<double>().ToArray(), scale.data<double>().ToArray(), th[..^1], th[^1], it);
    }

    /// <summary>p(desirable | embedding) for each row of [N, D] embeddings: [N] fp32, no gradient.</summary>
    public Tensor Probabilities(Tensor embeddings)
    {
        CheckEmbeddings(embeddings, "embeddings", Dimension);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var e = embeddings.detach().to(ScalarType.Float64);
        var x = (e - tensor(_center)) / tensor(_scale);
        return (x.matmul(tensor(_coef)) + Bias).sigmoid().to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Per-example BCO loss weights [N] fp32: clamp(p/(1 − p + 1e-8), 0.5, 10) for thumbs-down
    /// examples (p = p(desirable | their prompt)), 1 for thumbs-up.
    /// </summary>
    public Tensor Weights(Tensor embeddings, Tensor thumbsUp)
    {
        CheckEmbeddings(embeddings, "embeddings", Dimension);
        long n = embeddings.shape[0];
        using var scope = NewDisposeScope();
        var up = ObjectiveChecks.Labels(thumbsUp, "thumbs-up labels", n);
        var p = Probabilities(embeddings).to(ScalarType.Float64);
        var ratio = (p / (1 - p + 1e-8)).clamp(MinWeight, MaxWeight);
        return where(up, ones_like(ratio), ratio).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    private static Tensor Sample(Tensor e, int maxPerSide, Generator gen)
    {
        var x = e.detach().to(ScalarType.Float64);
        if (x.shape[0] <= maxPerSide) return x;
        var idx = randperm(x.shape[0], generator: gen)[..maxPerSide];
        return x.index_select(0, idx);
    }

    private static void CheckEmbeddings(Tensor e, string name, long dim)
    {
        if (e.dim() != 2)
            throw new FineAlignException($"{name} must be [count, dim], got [{string.Join(", ", e.shape)}]");
        if (e.shape[0] == 0) throw new FineAlignException($"{name}: no rows");
        if (dim >= 0 && e.shape[1] != dim)
            throw new FineAlignException($"{name} have dimension {e.shape[1]}, the classifier expects {dim}");
    }
}
