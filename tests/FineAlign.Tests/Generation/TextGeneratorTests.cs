using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace FineAlign.Tests.Generation;

public class TextGeneratorTests
{
    private static ModelConfig Tiny(string type) => type == "gpt2"
        ? new ModelConfig { ModelType = "gpt2", VocabSize = 40, HiddenSize = 16, IntermediateSize = 64, NumLayers = 2, NumHeads = 2, NumKvHeads = 2, HeadDim = 8, MaxPositionEmbeddings = 64, NormEps = 1e-5, TieWordEmbeddings = true, AttentionBias = true, MlpBias = true, HiddenAct = "gelu_new", EosTokenIds = new[] { 1 } }
        : new ModelConfig { ModelType = "llama", VocabSize = 40, HiddenSize = 16, IntermediateSize = 40, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 4, MaxPositionEmbeddings = 64, EosTokenIds = new[] { 1 } };

    private static readonly int[][] Prompts = { new[] { 5, 6, 7, 8, 9 }, new[] { 10, 11 }, new[] { 3, 4, 12 } };

    [Theory]
    [InlineData("llama", true)]
    [InlineData("llama", false)]
    [InlineData("gpt2", true)]
    [InlineData("gpt2", false)]
    public void CachedAndUncachedDecodingAgree(string type, bool sample)
    {
        using var model = ModelFactory.Create(Tiny(type), seed: 3);
        var o = new GenerationOptions { MaxNewTokens = 12, DoSample = sample, Temperature = 0.9, TopK = 20, TopP = 0.95, Seed = 7, EosTokenIds = Array.Empty<int>() };
        var cached = TextGenerator.Generate(model, Prompts, o);
        var uncached = TextGenerator.Generate(model, Prompts, o with { UseCache = false });
        for (int i = 0; i < Prompts.Length; i++)
        {
            Assert.Equal(uncached[i].Tokens, cached[i].Tokens);
            Assert.Equal(12, cached[i].Tokens.Length);
            for (int t = 0; t < cached[i].LogProbs.Length; t++)
                Assert.True(Math.Abs(uncached[i].LogProbs[t] - cached[i].LogProbs[t]) < 1e-4, $"row {i} step {t}: {cached[i].LogProbs[t]} vs {uncached[i].LogProbs[t]}");
        }
    }

    [Fact]
    public void LeftPaddedBatchMatchesEachPromptAlone()
    {
        using var model = ModelFactory.Create(Tiny("llama"), seed: 4);
        var o = new GenerationOptions { MaxNewTokens = 8, DoSample = false, EosTokenIds = Array.Empty<int>() };
        var batch = TextGenerator.Generate(model, Prompts, o);
        for (int i = 0; i < Prompts.Length; i++)
        {
            var alone = TextGenerator.Generate(model, new[] { Prompts[i] }, o)[0];
            Assert.Equal(alone.Tokens, batch[i].Tokens);
            for (int t = 0; t < alone.LogProbs.Length; t++) Assert.Equal(alone.LogProbs[t], batch[i].LogProbs[t], 4);
        }
    }

    [Fact]
    public void GreedyPicksArgmaxAndReportsItsLogSoftmax()
    {
        using var model = ModelFactory.Create(Tiny("llama"), seed: 5);
        var prompt = new[] { 5, 6, 7 };
        var g = TextGenerator.Generate(model, new[] { prompt }, new GenerationOptions { MaxNewTokens = 1, DoSample = false, EosTokenIds = Array.Empty<int>() })[0];
        using var _ = torch.no_grad();
        var logits = model.Forward(torch.tensor(prompt.Select(x => (long)x).ToArray(), new long[] { 1, 3 }))[0, -1];
        var logp = logits.log_softmax(-1);
        Assert.Equal(logits.argmax().item<long>(), g.Tokens[0]);
        Assert.Equal(logp[g.Tokens[0]].item<float>(), g.LogProbs[0], 5);
    }

    [Fact]
    public void SameSeedSameSamplesDifferentSeedDifferent()
    {
        using var model = ModelFactory.Create(Tiny("llama"), seed: 6);
        var o = new GenerationOptions { MaxNewTokens = 16, Temperature = 1.5, Seed = 11, EosTokenIds = Array.Empty<int>() };
        var a = TextGenerator.Generate(model, Prompts, o);
        var b = TextGenerator.Generate(model, Prompts, o);
        var c = TextGenerator.Generate(model, Prompts, o with { Seed = 12 });
        Assert.Equal(a.Select(s => s.Tokens), b.Select(s => s.Tokens));
        Assert.NotEqual(a.SelectMany(s => s.Tokens), c.SelectMany(s => s.Tokens));
    }

    [Fact]
    public void TopKOneEqualsGreedy()
    {
        using var model = ModelFactory.Create(Tiny("gpt2"), seed: 8);
        var greedy = TextGenerator.Generate(model, Prompts, new GenerationOptions { MaxNewTokens = 10, DoSample = false, EosTokenIds = Array.Empty<int>() });
        var topk1 = TextGenerator.Generate(model, Prompts, new GenerationOptions { MaxNewTokens = 10, TopK = 1, Seed = 3, EosTokenIds = Array.Empty<int>() });
        Assert.Equal(greedy.Select(s => s.Tokens), topk1.Select(s => s.Tokens));
    }

    [Fact]
    public void TopPKeepsOnlyTheNucleus()
    {
        // Hand-worked: probabilities 0.5, 0.3, 0.15, 0.05. With p = 0.75 the nucleus is {0, 1}
        // (0.5 < 0.75, so token 1 stays; 0.8 ≥ 0.75, so tokens 2 and 3 go).
        var logits = torch.tensor(new[] { 0.5f, 0.3f, 0.15f, 0.05f }).log().unsqueeze(0).expand(4000, 4).contiguous();
        using var gen = new torch.Generator(1);
        var (next, logp) = TextGenerator.ChooseNext(logits, new GenerationOptions { TopP = 0.75 }, gen);
        var counts = next.bincount(null, 4).data<long>().ToArray();
        Assert.Equal(0, counts[2] + counts[3]);
        Assert.InRange(counts[0] / 4000.0, 0.58, 0.67);   // renormalised 0.5/0.8 = 0.625
        // Reported log-prob is the untruncated one: log 0.5 for token 0.
        int first0 = Array.IndexOf(next.data<long>().ToArray(), 0L);
        Assert.Equal(Math.Log(0.5), logp[first0].item<float>(), 4);
    }

    [Fact]
    public void StopsAtEosAndKeepsIt()
    {
        using var model = ModelFactory.Create(Tiny("llama"), seed: 9);
        // Make every sequence end: declare the greedy first token as EOS.
        var probe = TextGenerator.Generate(model, Prompts, new GenerationOptions { MaxNewTokens = 1, DoSample = false, EosTokenIds = Array.Empty<int>() });
        var eos = probe[0].Tokens[0];
        var g = TextGenerator.Generate(model, Prompts, new GenerationOptions { MaxNewTokens = 10, DoSample = false, EosTokenIds = new[] { eos } });
        Assert.Equal(FinishReason.Eos, g[0].FinishReason);
        Assert.Equal(new[] { eos }, g[0].Tokens);
        foreach (var s in g)
            if (s.FinishReason == FinishReason.Eos) Assert.Equal(eos, s.Tokens[^1]);
            else Assert.Equal(10, s.Tokens.Length);
    }

    [Fact]
    public void StopStringCutsTheText()
    {
        using var model = ModelFactory.Create(Tiny("llama"), seed: 10);
        var tok = new LetterTokenizer();
        var o = new GenerationOptions { MaxNewTokens = 12, DoSample = false, EosTokenIds = Array.Empty<int>() };
        var full = TextGenerator.Generate(model, Prompts, o, tok)[0];
        Assert.Equal(12, full.Text.Length);
        string stop = full.Text.Substring(4, 2);
        var cut = TextGenerator.Generate(model, Prompts, o with { StopStrings = new[] { stop } }, tok)[0];
        Assert.Equal(FinishReason.StopString, cut.FinishReason);
        Assert.Equal(full.Text[..full.Text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.True(cut.Tokens.Length <= 6);
    }

    [Fact]
    public void RefusesEmptyPromptAndOverlongRequests()
    {
        using var model = ModelFactory.Create(Tiny("llama"), seed: 1);
        var e1 = Assert.Throws<FineAlignException>(() => TextGenerator.Generate(model, new[] { Array.Empty<int>() }, new GenerationOptions()));
        Assert.Contains("empty", e1.Message);
        var e2 = Assert.Throws<FineAlignException>(() => TextGenerator.Generate(model, Prompts, new GenerationOptions { MaxNewTokens = 100 }));
        Assert.Contains("context", e2.Message);
    }

    /// <summary>One letter per id: enough to exercise text decoding and stop strings.</summary>
    private sealed class LetterTokenizer : TextTokenizer
    {
        public override int VocabSize => 40;
        public override int[] Encode(string text) => text.Select(c => c - '0').ToArray();
        public override string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true) => new(ids.Select(i => (char)('0' + i)).ToArray());
        public override void Save(string folder) => throw new NotSupportedException();
    }
}
