using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Serving;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;

namespace FineAlign.Tests.Remote;

/// <summary>
/// Best-of-n and evaluation sampling through the remote rollout engine, against real <c>finealign serve</c> instances on
/// loopback (the fixtures of <see cref="RemoteRolloutTests"/>).
/// </summary>
[Collection("Serial torch RNG")]
public class RemoteBonEvalTests
{
    private static RemoteRolloutEngine Engine(Uri endpoint) =>
        new(new RemoteRolloutOptions { Endpoints = [endpoint], Model = "tiny", Attempts = 2, Timeout = TimeSpan.FromSeconds(30) });

    // A programmatic reward whose ranking is easy to recompute: the count of 'a' in the response.
    private static RewardSource CountA() => ProgrammaticRewardSource.Sequence("count_a", e => e.ResponseText!.Count(c => c == 'a'));

    /// <summary>A saved byte model, loaded here and served by a real <c>finealign serve</c> on loopback, with an engine on it.</summary>
    private sealed class ServedModel : IAsyncDisposable
    {
        private readonly TempDir _tmp = TestPaths.NewTempDir();
        public readonly string Dir;
        public readonly TextTokenizer Tokenizer;
        public readonly CausalLM Model;
        public OpenAiServer Server { get; private set; } = null!;
        public RemoteRolloutEngine Engine { get; private set; } = null!;

        private ServedModel()
        {
            Dir = CommandFixtures.SaveByteModel(Path.Combine(_tmp.Path, "model"));
            Tokenizer = TokenizerLoader.Load(Dir);
            Model = ModelIO.Load(Dir);
        }

        public static async Task<ServedModel> StartAsync()
        {
            var m = new ServedModel();
            m.Server = await RemoteRolloutTests.Serve(m.Dir);
            m.Engine = RemoteBonEvalTests.Engine(m.Server.BaseAddress);
            return m;
        }

        public async ValueTask DisposeAsync()
        {
            Engine.Dispose();
            await Server.DisposeAsync();
            Model.Dispose();
            _tmp.Dispose();
        }
    }

    [Fact]
    public async Task BestOfNOnServeKeepsTheBestOfTheServersSamples()
    {
        await using var served = await ServedModel.StartAsync();
        var (tok, model, server, engine, reward) = (served.Tokenizer, served.Model, served.Server, served.Engine, CountA());
        var options = new GenerationOptions { MaxNewTokens = 10, Seed = 9, EosTokenIds = model.Config.EosTokenIds };

        var picked = BestOfN.Generate(engine, tok, ["x", "y"], reward, 4, options);
        Assert.Equal(2, server.Metrics.Requests);   // one /v1/completions request per prompt, n = 4 samples each
        // The same request straight to the engine: the candidates are the server's samples, scored and ranked here.
        var direct = engine.Sequences(new RolloutRequest
        {
            PromptIds = [TextGenerator.EncodePrompt(tok, "x"), TextGenerator.EncodePrompt(tok, "y")], SamplesPerPrompt = 4,
            MaxNewTokens = 10, Seed = 9, StopTokenIds = model.Config.EosTokenIds,
        }, tok);
        for (int p = 0; p < 2; p++)
        {
            var texts = direct.Skip(p * 4).Take(4).Select(g => g.Text).ToArray();
            Assert.Equal(texts, picked[p].Candidates.Select(c => c.Text));
            var counts = texts.Select(t => (double)t.Count(c => c == 'a')).ToArray();
            Assert.Equal(counts, picked[p].CandidateRewards);
            Assert.Equal(counts.Max(), picked[p].Reward);
            Assert.Equal(texts[Array.IndexOf(counts, counts.Max())], picked[p].Best.Text);
        }
    }

    [Fact]
    public async Task RewardGuidedDecodingOnServeGrowsEachPrefixWithTheServersBestChunk()
    {
        await using var served = await ServedModel.StartAsync();
        var (tok, model, server, engine, reward) = (served.Tokenizer, served.Model, served.Server, served.Engine, CountA());
        var options = new GenerationOptions { MaxNewTokens = 9, Seed = 5, EosTokenIds = model.Config.EosTokenIds };

        var guided = RewardGuidedDecoding.Generate(model, tok, ["x", "yz"], reward, 3, 4, options, engine: engine);
        // Chunks of 4, 4, 1 tokens unless a sample ends early: one request per prefix per chunk, n = 3 each.
        int rounds = guided.Max(g => (g.Best.Tokens.Length + 3) / 4);
        Assert.InRange(server.Metrics.Requests, 2, 2 * 3);
        Assert.True(server.Metrics.Requests >= rounds);
        foreach (var g in guided)
        {
            Assert.InRange(g.Best.Tokens.Length, 1, 9);
            Assert.Equal(tok.Decode(g.Best.Tokens), g.Best.Text);                                // the chosen chunks, concatenated
            Assert.Equal(g.Best.Text.Count(c => c == 'a'), g.Reward);                             // scored on the whole response
            Assert.Equal(3, g.CandidateRewards.Length);
            Assert.Equal(g.CandidateRewards.Max(), g.Reward);
        }
        // The servers decode seeded requests reproducibly: the same call gives the same responses.
        var again = RewardGuidedDecoding.Generate(model, tok, ["x", "yz"], reward, 3, 4, options, engine: engine);
        Assert.Equal(guided.Select(g => g.Best.Tokens), again.Select(g => g.Best.Tokens));
        Assert.Throws<FineAlignException>(() => RewardGuidedDecoding.Generate(model, tok, ["x"], reward, 3, 4,
            options with { StopStrings = ["."] }, engine: engine));
    }

    [Fact]
    public async Task BonCommandSamplesOnTheEndpointInBothModes()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"good\"}", "{\"prompt\": \"bad\"}", "{\"prompt\": \"so\"}");
        await using var server = await RemoteRolloutTests.Serve(modelDir);
        string outFile = Path.Combine(tmp.Path, "bon.jsonl");
        var (code, stdout, err) = await Task.Run(() => CliRunner.Run("bon", "--model", modelDir, "--prompts", prompts, "--n", "3",
            "--max-new-tokens", "6", "--threads", "1", "--out", outFile, "--rollout-endpoint", server.BaseAddress.ToString(), "--rollout-model", "tiny"));
        Assert.True(code == 0, err + stdout);
        Assert.Contains("sampling on", stdout);
        Assert.Equal(6, server.Metrics.Requests);   // 3 prompts × (plain sampling + best-of-3)
        var rows = CommandFixtures.ReadJsonl(outFile);
        Assert.Equal(3, rows.Count);
        foreach (var row in rows)
        {
            var cand = row["candidate_rewards"]!.AsArray().Select(x => x!.GetValue<double>()).ToArray();
            Assert.Equal(3, cand.Length);
            Assert.Equal(cand.Max(), row["reward"]!.GetValue<double>(), 6);
        }

        long before = server.Metrics.Requests;
        string guidedOut = Path.Combine(tmp.Path, "guided.jsonl");
        var (guided, guidedStdout, guidedErr) = await Task.Run(() => CliRunner.Run("bon", "--model", modelDir, "--prompts", prompts, "--mode", "guided",
            "--n", "2", "--chunk-tokens", "3", "--max-new-tokens", "6", "--threads", "1", "--out", guidedOut,
            "--rollout-endpoint", server.BaseAddress.ToString(), "--rollout-model", "tiny"));
        Assert.True(guided == 0, guidedErr + guidedStdout);
        Assert.True(server.Metrics.Requests - before >= 3 + 3, "plain sampling and at least one guided chunk per prompt on the server");
        var guidedRows = CommandFixtures.ReadJsonl(guidedOut);
        Assert.Equal(3, guidedRows.Count);
        Assert.All(guidedRows, row => Assert.Equal(2, row["candidate_rewards"]!.AsArray().Count));
    }

    [Fact]
    public async Task EvalPolicyScoresTheServersSamplesWithTheLocalModels()
    {
        using var tmp = TestPaths.NewTempDir();
        string policyDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "policy"), seed: 11);
        string baseDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "base"), seed: 12);
        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"one\"}", "{\"prompt\": \"two\"}", "{\"prompt\": \"three\"}");
        await using var server = await RemoteRolloutTests.Serve(policyDir);
        string json = Path.Combine(tmp.Path, "eval.json");
        var (code, stdout, err) = await Task.Run(() => CliRunner.Run("eval-policy", "--model", policyDir, "--base", baseDir, "--prompts", prompts,
            "--reward", "lexicon", "--max-new-tokens", "5", "--threads", "1", "--output", json,
            "--rollout-endpoint", server.BaseAddress.ToString(), "--rollout-model", "tiny"));
        Assert.True(code == 0, err + stdout);
        Assert.Contains("sampling on", stdout);
        Assert.Equal(3, server.Metrics.Requests);

        var tok = TokenizerLoader.Load(policyDir);
        using var policy = ModelIO.Load(policyDir);
        using var engine = Engine(server.BaseAddress);
        var expected = engine.Sequences(new RolloutRequest
        {
            PromptIds = new[] { "one", "two", "three" }.Select(p => TextGenerator.EncodePrompt(tok, p)).ToList(), MaxNewTokens = 5,
            Temperature = 1.0, Seed = 7819, StopTokenIds = policy.Config.EosTokenIds,
        }, tok);
        var responses = JsonNode.Parse(File.ReadAllText(json))!["responses"]!.AsArray();
        Assert.Equal(expected.Select(g => g.Text), responses.Select(x => x!["response"]!.GetValue<string>()));
        // KL is measured here, against a base that differs from the policy: not zero, and finite.
        Assert.All(responses, x => Assert.True(double.IsFinite(x!["kl"]!.GetValue<double>())));
        Assert.Contains(responses, x => Math.Abs(x!["kl"]!.GetValue<double>()) > 1e-4);
        Assert.DoesNotContain("other weights", err);

        // Servers holding other weights than --model: the log-prob gap gives it away.
        await using var wrong = await RemoteRolloutTests.Serve(baseDir);
        var (code2, stdout2, err2) = await Task.Run(() => CliRunner.Run("eval-policy", "--model", policyDir, "--base", baseDir, "--prompts", prompts,
            "--reward", "lexicon", "--max-new-tokens", "5", "--threads", "1", "--rollout-endpoint", wrong.BaseAddress.ToString(), "--rollout-model", "tiny"));
        Assert.True(code2 == 0, err2 + stdout2);
        Assert.Contains("they serve other weights than --model", err2);
    }

    [Fact]
    public async Task UnseededRolloutsShareTheServersBatchesAndSeededOnesDoNot()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        var request = new RolloutRequest { PromptIds = [[256, 97], [256, 98], [256, 99], [256, 100]], SamplesPerPrompt = 2, MaxNewTokens = 4, Seed = 1, StopTokenIds = [257] };
        foreach (bool seeded in new[] { true, false })
        {
            // A long batch window: the four requests, sent together, arrive inside it even on a loaded machine.
            await using var server = await FineAlign.Serving.OpenAiServer.StartAsync(new FineAlign.Serving.ServeOptions
            {
                ModelPath = modelDir, ServedModelName = "tiny", Port = 0, BatchWindow = TimeSpan.FromMilliseconds(500),
            });
            using var engine = new RemoteRolloutEngine(new RemoteRolloutOptions
            {
                Endpoints = [server.BaseAddress], Model = "tiny", MaxConcurrency = 4, Seeded = seeded, Timeout = TimeSpan.FromSeconds(30),
            });
            Assert.Equal(8, engine.Generate(request).Count);
            if (seeded) Assert.Equal(1, server.Metrics.MaxRequestsPerBatch);   // a seeded request is decoded alone
            else Assert.True(server.Metrics.MaxRequestsPerBatch > 1, $"max requests per batch {server.Metrics.MaxRequestsPerBatch}");
        }
    }

    [Theory]
    [InlineData("full", 8)]   // 2 steps × 2 prompts of training + 2 evaluations × 2 held-out prompts
    [InlineData("none", 4)]   // servers hold stale weights: evaluation samples in-process
    public async Task HeldOutEvaluationSamplesOnTheServersOnlyWhenTheyAreSynced(string sync, int requests)
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string prompts = Path.Combine(tmp.Path, "p.jsonl"), evalPrompts = Path.Combine(tmp.Path, "e.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"good\"}", "{\"prompt\": \"bad\"}");
        CommandFixtures.WriteLines(evalPrompts, "{\"prompt\": \"fine\"}", "{\"prompt\": \"poor\"}");
        await using var server = await RemoteRolloutTests.Serve(modelDir);
        string outDir = Path.Combine(tmp.Path, "grpo");
        var (code, stdout, err) = await Task.Run(() => CliRunner.Run("grpo", "--policy", modelDir, "--prompts", prompts, "--out", outDir,
            "--steps", "2", "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "4", "--threads", "1",
            "--eval-prompts", evalPrompts, "--reward", "lexicon",
            "--rollout-endpoint", server.BaseAddress.ToString(), "--rollout-model", "tiny", "--rollout-sync", sync));
        Assert.True(code == 0, err + stdout);
        Assert.Equal(requests, server.Metrics.Requests);
        var metrics = CommandFixtures.ReadJsonl(Path.Combine(outDir, "metrics.jsonl"));
        Assert.True(metrics[0].ContainsKey("eval/reward") && metrics[^1].ContainsKey("eval/kl"));
    }
}
