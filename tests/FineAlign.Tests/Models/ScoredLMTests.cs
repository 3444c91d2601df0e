using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Models;

public class ScoredLMTests
{
    private static ModelConfig Llama(bool tied) => new()
    {
        ModelType = "llama", VocabSize = 30, HiddenSize = 16, IntermediateSize = 32, NumLayers = 2, NumHeads = 4, NumKvHeads = 2,
        HeadDim = 4, MaxPositionEmbeddings = 32, TieWordEmbeddings = tied, EosTokenIds = new[] { 2 }, PadTokenId = 0,
    };

    private static ModelConfig Gpt2() => new()
    {
        ModelType = "gpt2", VocabSize = 30, HiddenSize = 16, IntermediateSize = 64, NumLayers = 1, NumHeads = 2, NumKvHeads = 2,
        HeadDim = 8, MaxPositionEmbeddings = 32, NormEps = 1e-5, TieWordEmbeddings = true, AttentionBias = true, MlpBias = true, HiddenAct = "gelu_new",
    };

    private static Tensor Ids(params long[][] rows) => torch.tensor(rows.SelectMany(r => r).ToArray(), new long[] { rows.Length, rows[0].Length });

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SequenceScoreIsReadAtTheLastRealTokenWithEitherPadding(bool leftPad)
    {
        using var rm = new ScoredLM(ModelFactory.Create(Llama(false), 1), HeadKind.Sequence, 1, seed: 2);
        using var _ = torch.no_grad();
        long[] a = { 5, 6, 7, 8 }, b = { 9, 10 };
        var padded = leftPad ? new long[] { 0, 0, 9, 10 } : new long[] { 9, 10, 0, 0 };
        var mask = leftPad ? new long[] { 1, 1, 1, 1, 0, 0, 1, 1 } : new long[] { 1, 1, 1, 1, 1, 1, 0, 0 };
        var scores = rm.SequenceScores(Ids(a, padded), torch.tensor(mask, new long[] { 2, 4 }));
        Assert.Equal(new long[] { 2 }, scores.shape);
        float aloneA = rm.SequenceScores(Ids(a)).item<float>();
        float aloneB = rm.SequenceScores(Ids(b)).item<float>();
        Assert.Equal(aloneA, scores[0].item<float>(), 4);
        Assert.Equal(aloneB, scores[1].item<float>(), 4);
        // The head really reads the last token: it equals the token scores there.
        Assert.Equal(rm.TokenScores(Ids(a))[0, 3, 0].item<float>(), aloneA, 5);
    }

    [Theory]
    [InlineData("llama-untied", HeadKind.Sequence, 1)]
    [InlineData("llama-tied", HeadKind.Token, 2)]
    [InlineData("gpt2", HeadKind.Sequence, 1)]
    public void SaveLoadRoundTripsAsAHuggingFaceClassificationFolder(string which, HeadKind kind, int labels)
    {
        var config = which switch { "gpt2" => Gpt2(), "llama-tied" => Llama(true), _ => Llama(false) };
        using var dir = TestPaths.NewTempDir();
        string folder = Path.Combine(dir.Path, "rm");
        using var model = new ScoredLM(ModelFactory.Create(config, 3), kind, labels, seed: 4);
        model.Save(folder);
        using var loaded = ScoredLM.Load(folder);
        Assert.Equal(kind, loaded.Kind);
        Assert.Equal(labels, loaded.NumLabels);
        using var _ = torch.no_grad();
        var ids = Ids(new long[] { 3, 4, 5, 6, 7 });
        Assert.True(model.TokenScores(ids).allclose(loaded.TokenScores(ids), 0, 0));

        var json = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        string arch = json["architectures"]![0]!.GetValue<string>();
        Assert.EndsWith(kind == HeadKind.Sequence ? "ForSequenceClassification" : "ForTokenClassification", arch);
        Assert.Equal(labels, json["num_labels"]!.GetValue<int>());
        using var st = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors"));
        Assert.DoesNotContain(st.Entries.Keys, k => k.StartsWith("lm_head"));
        Assert.Contains("score.weight", st.Entries.Keys);
        Assert.Equal(kind == HeadKind.Token, st.Entries.ContainsKey("score.bias"));
    }

    [Fact]
    public void UntiedLmHeadIsFrozenAndACausalLmFolderIsRefused()
    {
        using var model = new ScoredLM(ModelFactory.Create(Llama(false), 3), HeadKind.Sequence, 1);
        Assert.False(model.named_parameters().Single(p => p.name.EndsWith("lm_head.weight")).parameter.requires_grad);
        Assert.True(model.named_parameters().Single(p => p.name.EndsWith("score.weight")).parameter.requires_grad);

        using var dir = TestPaths.NewTempDir();
        using var lm = ModelFactory.Create(Llama(false), 1);
        ModelIO.Save(lm, dir.Path);
        var e = Assert.Throws<FineAlignException>(() => ScoredLM.Load(dir.Path));
        Assert.Contains("classification", e.Message);
    }
}
