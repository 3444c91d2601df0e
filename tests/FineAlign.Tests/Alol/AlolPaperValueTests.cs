using FineAlign.Data;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Reliability;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using static TorchSharp.torch;

namespace FineAlign.Tests.OfflineRl;

/// <summary>The paper's A-LoL value estimate: the attention + MLP head, its targets (the reference's own responses) and the CLI choice.</summary>
[Collection("Serial torch RNG")]
public class AlolPaperValueTests
{
    [Fact]
    public void The_head_stays_in_the_reward_range_and_ignores_padding()
    {
        using var head = new AttentionValueHead(16, -1, 2, seed: 3);
        head.eval();
        using var g = new TorchSharp.torch.Generator(7);
        using var states = randn(2, 5, 16, generator: g);
        using var mask = tensor(new long[,] { { 1, 1, 1, 1, 1 }, { 1, 1, 1, 0, 0 } });
        using var v = head.forward(states, mask);
        Assert.Equal([2L], v.shape);
        foreach (float x in v.data<float>()) Assert.InRange(x, -1f, 2f);

        // Row 1 has 3 real tokens: changing what sits in its padding must not change its value.
        using var changed = states.clone();
        changed[1, TensorIndex.Slice(3, 5)] = randn(2, 16, generator: g) * 100;
        using var v2 = head.forward(changed, mask);
        Assert.Equal(v[1].item<float>(), v2[1].item<float>(), 6);
        using var unpadded = head.forward(states[TensorIndex.Slice(1, 2), TensorIndex.Slice(0, 3)], ones(1, 3, dtype: int64));
        Assert.Equal(v[1].item<float>(), unpadded[0].item<float>(), 5);
    }

    [Fact]
    public void Targets_are_the_reward_of_the_references_own_greedy_responses_and_the_head_learns_them()
    {
        var tok = new ByteTokenizer();
        using var reference = ModelFactory.Create(ModelPresets.Create("tiny", tok, 48), 11);
        // Prompts of two kinds; the "reward" depends on the prompt only, so a value head can learn it exactly.
        var data = Enumerable.Range(0, 24).Select(i =>
        {
            string prompt = (i % 2 == 0 ? "good " : "bad ") + i;
            var ids = new[] { tok.BosId!.Value }.Concat(tok.Encode(prompt)).ToArray();
            return new EncodedOffline(i + 1, new EncodedSequence(ids, tok.Encode(" x"), [true, true]), 0.0);
        }).ToList();
        var seen = new List<(int[] Prompt, GeneratedSequence Response)>();
        ResponseScorer scorer = (prompts, responses) =>
        {
            seen.AddRange(prompts.Zip(responses));
            return prompts.Select(p => tok.Decode(p).StartsWith("good") ? 1.0 : 0.0).ToArray();
        };
        var o = new AlolPaperValueOptions { ValidationPrompts = 24, MaxNewTokens = 4, Epochs = 60, BatchSize = 8, LearningRate = 3e-3 };
        var fit = AlolPaperValue.Estimate(reference, tok, data, scorer, o, seed: 5);
        using var head = fit.Head;

        Assert.Equal(24, seen.Count);
        foreach (var (prompt, response) in seen)
        {
            var greedy = TextGenerator.Generate(reference, [prompt], new GenerationOptions { MaxNewTokens = 4, DoSample = false }, tok)[0];
            Assert.Equal(greedy.Tokens, response.Tokens);   // the reference's own response, not the data's " x"
        }
        Assert.Equal(0.25, fit.ValidationRewardVariance, 6);
        Assert.True(fit.ValidationMse < 0.05, $"the head did not learn a prompt-only reward: MSE {fit.ValidationMse:F4} vs variance 0.25");
        for (int i = 0; i < data.Count; i++)
            Assert.True(i % 2 == 0 ? fit.Values[i] > 0.6 : fit.Values[i] < 0.4, $"V of example {i} is {fit.Values[i]:F3}");
    }

    [Fact]
    public void The_cli_uses_the_paper_estimator_on_the_built_in_corpus_and_refuses_it_explicitly_without_a_reward()
    {
        using var dir = TestPaths.NewTempDir();
        string model = CommandFixtures.SaveByteModel(Path.Combine(dir.Path, "init"), context: 48);
        var (code, stdout, stderr) = CliRunner.Run("alol", "--model", model, "--out", Path.Combine(dir.Path, "paper"), "--max-steps", "2",
            "--corpus-size", "40", "--value-prompts", "8", "--value-epochs", "2", "--max-new-tokens", "4", "--eval-prompts", "0", "--threads", "1");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("value (paper): attention + MLP head on 8 validation prompts", stdout);
        Assert.True(File.Exists(Path.Combine(dir.Path, "paper", AlolTrainer.ValueFolder, AlolTrainer.PaperHeadFile)));

        string data = Path.Combine(dir.Path, "offline.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => $"{{\"prompt\":\"p{i}\",\"completion\":\" c\",\"reward\":{i % 2}}}"));
        var explicitPaper = CliRunner.Run("alol", "--model", model, "--data", data, "--out", Path.Combine(dir.Path, "x"), "--value-estimator", "paper");
        MalformedInputTests.AssertOneLineError(explicitPaper, "--value-estimator", "pass --reward SPEC, or use --value-estimator linear");
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "x")));
    }
}
