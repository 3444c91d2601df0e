using static TorchSharp.torch;

namespace FineAlign.Tests.Objectives;

internal static class T
{
    public static Tensor V(params float[] x) => tensor(x);
    public static Tensor G(params float[] x) => tensor(x, requires_grad: true);
    public static Tensor B(params bool[] x) => tensor(x);
    public static float[] Grad(Tensor t) => t.grad!.data<float>().ToArray();
    public static float[] Values(Tensor t) => t.detach().data<float>().ToArray();

    public static void AllFinite(IReadOnlyDictionary<string, double> metrics)
    {
        foreach (var (k, v) in metrics) Assert.True(double.IsFinite(v), $"metric {k} = {v}");
    }

    public static void Keys(IReadOnlyDictionary<string, double> metrics, params string[] expected) =>
        Assert.Equal(expected.OrderBy(k => k, StringComparer.Ordinal), metrics.Keys.OrderBy(k => k, StringComparer.Ordinal));
}
