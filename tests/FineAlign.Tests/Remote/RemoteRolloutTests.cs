using System.Net;
using System.Net.Sockets;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Serving;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Training;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace FineAlign.Tests.Remote;

/// <summary>
/// The remote rollout engine against real <c>finealign serve</c> instances (Kestrel on free loopback ports) over a tiny
/// model made in the test, and against small ASP.NET Core stand-ins that misbehave on purpose.
/// </summary>
[Collection("Serial torch RNG")]
public class RemoteRolloutTests
{
    internal static Task<OpenAiServer> Serve(string modelDir) =>
        OpenAiServer.StartAsync(new ServeOptions { ModelPath = modelDir, ServedModelName = "tiny", Port = 0 });

    private static RemoteRolloutEngine Engine(List<string> log, string? syncDir, params Uri[] endpoints) =>
        new(new RemoteRolloutOptions
        {
            Endpoints = endpoints, Model = "tiny", SyncDir = syncDir, Attempts = 2, Backoff = TimeSpan.FromMilliseconds(10),
            Timeout = TimeSpan.FromSeconds(30),
        }, m => { lock (log) log.Add(m); });

    private static readonly string[] Prompts = ["once", "the cat", "a dog ran", "up"];

    private static OnlineRlTrainer Grpo(string modelDir, string outDir, IRolloutEngine engine, bool sync, CausalLM policy, CausalLM reference) =>
        new(policy, reference, null, new ByteTokenizer(), ProgrammaticRewardSource.Sequence("len", e => e.ResponseIds.Sum() % 7), Prompts,
            OnlineRlOptions.Grpo with { OutputDir = outDir, Steps = 3, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 6, LearningRate = 3e-2 })
        { Rollouts = engine, SyncRolloutWeights = sync, WriteTensorBoard = false };

    [Fact]
    public async Task GrpoOnServeWithWeightSyncHasNoLogProbGapAndWithoutSyncItGrows()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        var log = new List<string>();

        await using (var server = await Serve(modelDir))
        {
            using var engine = Engine(log, Path.Combine(tmp.Path, "sync"), server.BaseAddress);
            using var policy = ModelIO.Load(modelDir);
            using var reference = ModelIO.Load(modelDir);
            using var trainer = Grpo(modelDir, Path.Combine(tmp.Path, "synced"), engine, sync: true, policy, reference);
            var result = trainer.Train();
            Assert.True(result.Completed);
            Assert.Equal(3, result.LogHistory.Count);
            foreach (var m in result.LogHistory)
            {
                Assert.InRange(m["rollout/logprob_gap"], 0, 1e-3); // the server samples from the trainer's current weights
                Assert.Equal(0, m["rollout/weights_lag_steps"]);
            }
            Assert.Equal(3, engine.WeightsVersion);
            Assert.True(server.Metrics.Reloads >= 3);
            Assert.Single(Directory.GetDirectories(Path.Combine(tmp.Path, "sync"))); // only the served version is kept
        }

        await using (var server = await Serve(modelDir))
        {
            using var engine = Engine(log, null, server.BaseAddress);
            using var policy = ModelIO.Load(modelDir);
            using var reference = ModelIO.Load(modelDir);
            using var trainer = Grpo(modelDir, Path.Combine(tmp.Path, "stale"), engine, sync: false, policy, reference);
            var h = trainer.Train().LogHistory;
            Assert.InRange(h[0]["rollout/logprob_gap"], 0, 1e-3);   // same initial weights
            Assert.Equal(2, h[2]["rollout/weights_lag_steps"]);
            Assert.True(h[2]["rollout/logprob_gap"] > 1e-2, $"a server two updates behind should differ (gap {h[2]["rollout/logprob_gap"]})");
        }
        Assert.Empty(log);
    }

    /// <summary>Stops one of two servers after the first rollout batch: a progress report runs between steps.</summary>
    private sealed class StopAfterFirst(OpenAiServer server) : IProgress<ProgressUpdate>
    {
        public void Report(ProgressUpdate value) { if (value.Step == 1) server.StopAsync().GetAwaiter().GetResult(); }
    }

    [Fact]
    public async Task PpoOnTwoEndpointsContinuesWhenOneStopsMidRun()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        var log = new List<string>();
        await using var a = await Serve(modelDir);
        await using var b = await Serve(modelDir);
        using var engine = Engine(log, Path.Combine(tmp.Path, "sync"), a.BaseAddress, b.BaseAddress);
        using var policy = ModelIO.Load(modelDir);
        using var reference = ModelIO.Load(modelDir);
        using var value = ValueModel.Separate(new ScoredLM(ModelIO.Load(modelDir), HeadKind.Token, 1, 5));
        using var trainer = new OnlineRlTrainer(policy, reference, value, new ByteTokenizer(), RewardSpecs.Lexicon(), Prompts,
            OnlineRlOptions.Ppo with { OutputDir = Path.Combine(tmp.Path, "ppo"), Steps = 3, BatchSize = 4, MiniBatchSize = 2, Epochs = 1, MaxNewTokens = 6, LearningRate = 1e-2 })
        { Rollouts = engine, SyncRolloutWeights = true, WriteTensorBoard = false, Progress = new StopAfterFirst(b) };
        long servedByB = 0;
        var result = trainer.Train();
        servedByB = b.Metrics.Requests;
        Assert.True(result.Completed);
        Assert.True(servedByB > 0 && a.Metrics.Requests > servedByB, $"a {a.Metrics.Requests}, b {servedByB}: b served step 1 only");
        var failed = Assert.Single(log); // reported once, then skipped
        Assert.Contains(b.BaseAddress.ToString().TrimEnd('/'), failed);
        Assert.Contains("skipped", failed);
        Assert.Equal([a.BaseAddress.ToString().TrimEnd('/')], engine.LiveEndpoints);
        foreach (var m in result.LogHistory) Assert.InRange(m["rollout/logprob_gap"], 0, 1e-3);
    }

    [Fact]
    public async Task GrpoCommandRunsOnARolloutEndpointWithFullSync()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"good\"}", "{\"prompt\": \"bad\"}");
        await using var server = await Serve(modelDir);
        string outDir = Path.Combine(tmp.Path, "grpo");
        var (code, stdout, err) = await Task.Run(() => CliRunner.Run("grpo", "--policy", modelDir, "--prompts", prompts, "--out", outDir,
            "--steps", "2", "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "6", "--threads", "1",
            "--rollout-endpoint", server.BaseAddress.ToString(), "--rollout-model", "tiny", "--rollout-sync", "full"));
        Assert.True(code == 0, err + stdout);
        Assert.Contains("rollouts on", stdout);
        var metrics = CommandFixtures.ReadJsonl(Path.Combine(outDir, "metrics.jsonl"));
        Assert.Equal(2, metrics.Count);
        foreach (var m in metrics)
        {
            Assert.InRange(m["rollout/logprob_gap"]!.GetValue<double>(), 0, 1e-3);
            Assert.Equal(0, m["rollout/weights_lag_steps"]!.GetValue<double>());
        }
        Assert.True(server.Metrics.Reloads >= 2);

        var (code2, _, err2) = CliRunner.Run("grpo", "--policy", modelDir, "--prompts", prompts, "--out", Path.Combine(tmp.Path, "x"),
            "--rollout-endpoint", server.BaseAddress.ToString());
        Assert.Equal(1, code2);
        Assert.Contains("--rollout-model", err2);
    }

    private static RolloutRequest Request => new() { PromptIds = [[256, 97], [256, 98]], SamplesPerPrompt = 2, MaxNewTokens = 4, Seed = 1, StopTokenIds = [257] };

    private static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    /// <summary>A few lines of ASP.NET Core on loopback standing in for a misbehaving server.</summary>
    internal static async Task<WebApplication> StandIn(Func<HttpContext, Task> handler)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0));
        var app = builder.Build();
        app.MapPost("/{**path}", handler);
        await app.StartAsync();
        return app;
    }

    internal static Uri Address(WebApplication app) => new(app.Urls.First());

    [Fact]
    public void AnUnreachableEndpointFailsTheBatchNamingIt()
    {
        var log = new List<string>();
        var url = new Uri($"http://127.0.0.1:{FreePort()}");
        using var engine = Engine(log, null, url);
        var ex = Assert.Throws<FineAlignException>(() => engine.Generate(Request));
        Assert.Contains("rollout batch 1: no endpoint answered", ex.Message);
        Assert.Contains(url.ToString().TrimEnd('/'), ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Single(log);
    }

    [Fact]
    public async Task Http500AndARepliesWithoutLogprobsAreOneLineErrors()
    {
        int calls = 0;
        await using var failing = await StandIn(ctx => { Interlocked.Increment(ref calls); ctx.Response.StatusCode = 500; return ctx.Response.WriteAsync("{\"error\": \"boom\"}"); });
        var log = new List<string>();
        using (var engine = Engine(log, null, Address(failing)))
        {
            var ex = Assert.Throws<FineAlignException>(() => engine.Generate(Request));
            Assert.Contains("HTTP 500", ex.Message);
            Assert.Contains("rollout batch 1", ex.Message);
            Assert.Contains(Address(failing).ToString().TrimEnd('/'), ex.Message);
            Assert.True(calls >= 2, $"retried: {calls} calls");
        }

        await using var bare = await StandIn(ctx => ctx.Response.WriteAsJsonAsync(new
        {
            choices = new[] { new { index = 0, text = "ab", finish_reason = "length" }, new { index = 1, text = "cd", finish_reason = "length" } },
        }));
        using (var engine = Engine(log, null, Address(bare)))
        {
            var ex = Assert.Throws<FineAlignException>(() => engine.Generate(Request));
            Assert.Contains("has no logprobs", ex.Message);
            Assert.Contains(Address(bare).ToString().TrimEnd('/'), ex.Message);
            Assert.Contains("rollout batch 1", ex.Message);
        }
    }

    [Fact]
    public async Task ServeAnswersTokenIdPromptsWithIdsAndTheStopToken()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        await using var server = await Serve(modelDir);
        using var engine = Engine([], null, server.BaseAddress);
        var first = engine.Generate(Request);
        var again = engine.Generate(Request);
        Assert.Equal(4, first.Count);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(first[i].ResponseIds, again[i].ResponseIds); // per-prompt seeds: the same request gives the same samples
            Assert.Equal(first[i].ResponseIds.Length, first[i].LogProbs!.Length);
            Assert.All(first[i].LogProbs!, lp => Assert.True(lp <= 0 && float.IsFinite(lp)));
            if (first[i].Finish == RolloutFinish.Stop) Assert.Equal(257, first[i].ResponseIds[^1]);
            else Assert.Equal(4, first[i].ResponseIds.Length);
        }
    }

    [Fact]
    public async Task TheApiKeyComesFromTheNamedEnvironmentVariable()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        await using var server = await OpenAiServer.StartAsync(new ServeOptions { ModelPath = modelDir, ServedModelName = "tiny", Port = 0, ApiKey = "sekret" });
        using (var keyless = Engine([], null, server.BaseAddress))
        {
            var ex = Assert.Throws<FineAlignException>(() => keyless.Generate(Request));
            Assert.Contains("HTTP 401", ex.Message);
        }
        using (var keyed = new RemoteRolloutEngine(new RemoteRolloutOptions { Endpoints = [server.BaseAddress], Model = "tiny", ApiKey = "sekret" }))
            Assert.Equal(4, keyed.Generate(Request).Count);

        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"x\"}");
        string[] Args(string outDir) => ["grpo", "--policy", modelDir, "--prompts", prompts, "--out", Path.Combine(tmp.Path, outDir), "--steps", "1",
            "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "3", "--threads", "1",
            "--rollout-endpoint", server.BaseAddress.ToString(), "--rollout-model", "tiny", "--rollout-api-key-env", "FINEALIGN_TEST_ROLLOUT_KEY"];
        var (missing, _, missingErr) = await Task.Run(() => CliRunner.Run(Args("a")));
        Assert.Equal(1, missing);
        Assert.Contains("FINEALIGN_TEST_ROLLOUT_KEY: the environment variable is not set", missingErr);
        Environment.SetEnvironmentVariable("FINEALIGN_TEST_ROLLOUT_KEY", "sekret");
        try
        {
            var (code, stdout, err) = await Task.Run(() => CliRunner.Run(Args("b")));
            Assert.True(code == 0, err + stdout);
        }
        finally { Environment.SetEnvironmentVariable("FINEALIGN_TEST_ROLLOUT_KEY", null); }
    }

    [Fact]
    public async Task ALoraPolicySyncsAsAnAdapterThatServeMergesOnReload()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        await using var server = await Serve(modelDir);
        using var engine = Engine([], Path.Combine(tmp.Path, "sync"), server.BaseAddress);
        using var policy = ModelIO.Load(modelDir);
        Lora.Apply(policy, new LoraSettings { R = 4, Alpha = 8, Dropout = 0, BaseModelNameOrPath = Path.GetFullPath(modelDir) }, seed: 3);
        using var reference = ModelIO.Load(modelDir);
        using var trainer = Grpo(modelDir, Path.Combine(tmp.Path, "lora"), engine, sync: true, policy, reference);
        var h = trainer.Train().LogHistory;
        Assert.True(File.Exists(Path.Combine(tmp.Path, "sync", "weights-3", "adapter_config.json"))); // the adapter, not the base
        foreach (var m in h) Assert.InRange(m["rollout/logprob_gap"], 0, 1e-3);
    }

    [Fact]
    public async Task LoraSyncLoadsTheAdapterThroughLoadLoraAdapterAndSamplesFromIt()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        await using var server = await Serve(modelDir);
        using var engine = new RemoteRolloutEngine(new RemoteRolloutOptions
        {
            Endpoints = [server.BaseAddress], Model = "tiny", SyncDir = Path.Combine(tmp.Path, "sync"), LoraName = "tiny-policy",
        });
        using var policy = ModelIO.Load(modelDir);
        Lora.Apply(policy, new LoraSettings { R = 4, Alpha = 8, Dropout = 0, BaseModelNameOrPath = Path.GetFullPath(modelDir) }, seed: 3);
        using var reference = ModelIO.Load(modelDir);
        using var trainer = Grpo(modelDir, Path.Combine(tmp.Path, "lora"), engine, sync: true, policy, reference);
        var h = trainer.Train().LogHistory;
        foreach (var m in h) Assert.InRange(m["rollout/logprob_gap"], 0, 1e-3);
        Assert.Equal(0, server.Metrics.Reloads); // no full reload: the adapter went through /v1/load_lora_adapter
        var (status, models) = (200, await new HttpClient().GetStringAsync(new Uri(server.BaseAddress, "v1/models")));
        Assert.Contains("tiny-policy", models);
    }
}
