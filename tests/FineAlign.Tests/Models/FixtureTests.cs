using System.Text.Json;
using FineAlign.Models;
using FineAlign.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

/// <summary>
/// Every fixture folder (tiny HF checkpoint + what PyTorch/transformers computed on it) must be
/// reproduced by our loader and forward pass.
/// </summary>
public class FixtureTests
{
    public static IEnumerable<object[]> Fixtures()
    {
        string root = TestPaths.RequireShared("fixtures");
        foreach (var dir in Directory.EnumerateDirectories(root).OrderBy(d => d, StringComparer.Ordinal))
            if (File.Exists(Path.Combine(dir, "expected.json")))
                yield return new object[] { Path.GetFileName(dir) };
    }

    [Fact]
    public void FixtureFolderIsNotEmpty() => Assert.True(Fixtures().Count() >= 2);

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ForwardMatchesTransformers(string name)
    {
        string dir = TestPaths.RequireShared(Path.Combine("fixtures", name));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "expected.json")));
        var exp = doc.RootElement;
        long[] ids = exp.GetProperty("input_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();

        using var model = ModelIO.Load(dir);
        using var _ = inference_mode();
        using var input = tensor(ids).unsqueeze(0);
        using var logits = model.Forward(input);                                   // [1, T, V]
        Assert.Equal(new long[] { 1, ids.Length, model.Config.VocabSize }, logits.shape);

        using var logp = logits.log_softmax(-1);
        using var targets = input.narrow(1, 1, ids.Length - 1).unsqueeze(-1);
        using var tokenLogp = logp.narrow(1, 0, ids.Length - 1).gather(-1, targets).squeeze(-1).squeeze(0);
        float[] got = tokenLogp.data<float>().ToArray();
        float[] want = exp.GetProperty("token_logprobs").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < want.Length; i++) Assert.True(Math.Abs(want[i] - got[i]) < 1e-4, $"token {i}: {got[i]} vs {want[i]}");
        Assert.Equal(exp.GetProperty("sequence_logprob").GetDouble(), got.Sum(x => (double)x), 1e-4 * want.Length);

        float[] last = logits[0, -1].data<float>().ToArray();
        float[] wantLast = exp.GetProperty("logits_last").EnumerateArray().Select(e => e.GetSingle()).ToArray();
        Assert.Equal(wantLast.Length, last.Length);
        for (int i = 0; i < last.Length; i++) Assert.True(Math.Abs(last[i] - wantLast[i]) < 1e-4, $"logit {i}: {last[i]} vs {wantLast[i]}");

        double sum = logits.sum().item<float>();
        double absSum = logits.abs().sum().item<float>();
        Assert.Equal(exp.GetProperty("logits_sum").GetDouble(), sum, 0.05);
        Assert.Equal(exp.GetProperty("logits_abs_sum").GetDouble(), absSum, 0.05);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void SaveThenLoadGivesSameLogitsAndSameFileNames(string name)
    {
        string dir = TestPaths.RequireShared(Path.Combine("fixtures", name));
        using var tmp = TestPaths.NewTempDir();
        string outDir = Path.Combine(tmp.Path, "saved");
        using var model = ModelIO.Load(dir);
        ModelIO.Save(model, outDir);
        using var again = ModelIO.Load(outDir);

        using var original = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        using var saved = SafeTensorsFile.Open(Path.Combine(outDir, "model.safetensors"));
        Assert.Equal(original.Entries.Keys.OrderBy(k => k), saved.Entries.Keys.OrderBy(k => k));
        Assert.Equal("pt", saved.Metadata["format"]);

        using var _ = inference_mode();
        using var ids = tensor(new long[] { 3, 1, 4, 1, 5, 9, 2, 6 }).unsqueeze(0);
        using var a = model.Forward(ids);
        using var b = again.Forward(ids);
        Assert.True(a.equal(b).all().item<bool>());
    }
}
