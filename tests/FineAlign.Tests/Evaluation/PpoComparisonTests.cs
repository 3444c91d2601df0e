using System.Text.Json;
using FineAlign.Data.Corpus;
using FineAlign.Evaluation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Tests.Evaluation;

/// <summary>The ppo-compare experiment as a library call (Evaluation/PpoComparison): the CLI only parses and reports.</summary>
[Collection("Serial torch RNG")]
public class PpoComparisonTests
{
    private static PpoComparisonSetup Setup(string outDir)
    {
        var (train, eval) = ReviewCorpus.Prompts(ReviewCorpus.DefaultSeed, 60);
        var options = OnlineRlOptions.Ppo with { OutputDir = outDir, Steps = 2, BatchSize = 4, MiniBatchSize = 2, MaxNewTokens = 6, Seed = 3 };
        return new PpoComparisonSetup(train, eval.Take(4).ToList(), options, MaxNewTokens: 6, EvalSeed: 11);
    }

    private static (CausalLM, CausalLM, ValueModel?, TextTokenizer) Models()
    {
        var policy = ModelFactory.Create(TinyModels.ByteLlama(), 1);
        return (policy, ModelFactory.Create(TinyModels.ByteLlama(), 1), ValueModel.Shared(policy, 1), new ByteTokenizer());
    }

    [Fact]
    public void EveryVariantTrainsFromTheSameStartAndIsEvaluatedTheSameWay()
    {
        using var tmp = TestPaths.NewTempDir();
        var setup = Setup(Path.Combine(tmp.Path, "cmp"));
        var variants = new[] { new PpoVariant("sequence", "lexicon"), new PpoVariant("token", "lexicon:token") };
        var lines = new List<string>();
        var result = PpoComparison.Run(setup, variants, Models, (tok, spec) => RewardSpecs.Build([spec], tok), log: lines.Add);

        Assert.Equal(["sequence", "token"], result.Rows.Select(r => r.Name));
        Assert.Equal(4, result.Initial.Samples);
        Assert.All(result.Rows, r => Assert.Equal(4, r.Eval.Samples));
        Assert.All(result.Rows, r => Assert.Equal(2, r.Curve.Count));                  // env/true_reward per rollout batch
        Assert.All(result.Rows, r => Assert.True(File.Exists(Path.Combine(setup.Options.OutputDir, r.Name, "metrics.jsonl"))));
        Assert.Equal(3, lines.Count);                                                 // initial + one line per variant

        // The initial evaluation does not depend on the variants: the same setup gives the same numbers.
        var again = PpoComparison.Run(setup, variants.Take(1).ToList(), Models, (tok, spec) => RewardSpecs.Build([spec], tok));
        Assert.Equal(result.Initial.TrueReward, again.Initial.TrueReward);
        Assert.Equal(result.Rows[0].Eval.TrueReward, again.Rows[0].Eval.TrueReward);  // same seed, same run

        string root = Path.Combine(tmp.Path, "report");
        string table = PpoComparison.Write(result, root);
        Assert.Contains("| sequence | `lexicon` |", table);
        Assert.Equal(table, File.ReadAllText(Path.Combine(root, "comparison.md")));
        Assert.True(File.Exists(Path.Combine(root, "comparison.png")));
        var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(root, "comparison.json"))).RootElement;
        Assert.Equal(2, json.GetProperty("variants").GetArrayLength());
        Assert.Equal(2, json.GetProperty("steps").GetInt32());
    }

    [Fact]
    public void VariantNamesMapToTheirRewardSpecsAndAnUnknownOneIsNamed()
    {
        var v = PpoComparison.Variants(["pivot", "sequence", "discrete"], "rm:r", "d");
        Assert.Equal(["pivot:tlcr:d", "rm:r", "discrete:d"], v.Select(x => x.RewardSpec));
        var e = Assert.Throws<FineAlignException>(() => PpoComparison.Variants(["tlcr", "dpo"], "lexicon", "d"));
        Assert.Equal("unknown variant 'dpo' (sequence, tlcr, discrete, pivot)", e.Message);
    }
}
