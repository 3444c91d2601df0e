using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using FineAlign.Rewards;
using FineAlign.Tests.Support;
using FineAlign.Text;
using FineAlign.Trainers;
using FineAlign.Tests.Cli;
using FineAlign.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using static TorchSharp.torch;

namespace FineAlign.Tests.Remote;

/// <summary><c>--reward http://URL</c> and <c>http-token:URL</c> against reward servers written in the test (ASP.NET Core on loopback).</summary>
[Collection("Serial torch RNG")]
public class RemoteRewardTests
{
    private static RewardBatch Batch(out Tensor mask)
    {
        // Two responses: 3 tokens and 2 tokens (one padding position).
        var ids = tensor(new long[] { 104, 105, 257, 111, 107, 258 }, new long[] { 2, 3 });
        mask = tensor(new float[] { 1, 1, 1, 1, 1, 0 }, new long[] { 2, 3 });
        return new RewardBatch(ids, mask, null, ["p1 ", "p2 "], ["hi", "ok"]);
    }

    [Fact]
    public async Task SequenceRewardsSpeakOpenRlhfsProtocolBothWays()
    {
        JsonObject? seen = null;
        await using var app = await RemoteRolloutTests.StandIn(async ctx =>
        {
            seen = (await JsonNode.ParseAsync(ctx.Request.Body))!.AsObject();
            var queries = seen["query"]!.AsArray();
            await ctx.Response.WriteAsJsonAsync(new { rewards = queries.Select(q => (double)q!.GetValue<string>().Length).ToArray() });
        });
        var source = RewardSpecs.Build([RemoteRolloutTests.Address(app) + "score@2"], new ByteTokenizer());
        using var r = source.Compute(Batch(out _));
        // OpenRLHF's query: the prompt + the response decoded with its special tokens (agent.py decodes with skip_special_tokens=False).
        Assert.Equal(new[] { "p1 hi<|eos|>", "p2 ok" }, seen!["query"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.Equal(new[] { "p1 ", "p2 " }, seen["prompts"]!.AsArray().Select(x => x!.GetValue<string>()));
        Assert.Equal(2, seen["labels"]!.AsArray().Count);
        Assert.Equal(new[] { 111L, 107L }, seen["response_ids"]![1]!.AsArray().Select(x => x!.GetValue<long>()));
        // reward = the query's length (12 and 5) on each last valid token, weighted ×2
        Assert.Equal(new float[] { 0, 0, 24, 0, 10, 0 }, r.Values.data<float>().ToArray());
    }

    [Fact]
    public async Task TokenLevelRewardsFillTheBatchLayout()
    {
        await using var app = await RemoteRolloutTests.StandIn(async ctx =>
        {
            var body = (await JsonNode.ParseAsync(ctx.Request.Body))!;
            var rows = body["response_ids"]!.AsArray().Select(row => row!.AsArray().Select(x => x!.GetValue<long>() / 100.0).ToArray()).ToArray();
            await ctx.Response.WriteAsJsonAsync(new { rewards = rows });
        });
        var source = RewardSpecs.Build(["http-token:" + RemoteRolloutTests.Address(app) + "tokens"], new ByteTokenizer());
        using var r = source.Compute(Batch(out _));
        var v = r.Values.data<float>().ToArray();
        Assert.Equal(new[] { 1.04f, 1.05f, 2.57f, 1.11f, 1.07f, 0f }, v.Select(x => MathF.Round(x, 2)));
    }

    [Theory]
    [InlineData("500", "HTTP 500")]
    [InlineData("count", "1 rewards for 2 responses")]
    [InlineData("nonnumber", "reward 2 is not a number")]
    [InlineData("nolist", "no 'rewards' list")]
    public async Task BadRepliesAreOneLineErrorsNamingTheEndpointAndBatch(string mode, string expected)
    {
        await using var app = await RemoteRolloutTests.StandIn(ctx => mode switch
        {
            "500" => Fail(ctx),
            "count" => ctx.Response.WriteAsync("{\"rewards\": [1.0]}"),
            "nonnumber" => ctx.Response.WriteAsync("{\"rewards\": [1.0, \"NaN\"]}"),
            _ => ctx.Response.WriteAsync("{\"reward\": 3}"),
        });
        var url = RemoteRolloutTests.Address(app) + "r";
        var source = new RemoteRewardSource("http", new Uri(url), tokenLevel: false, attempts: 2);
        var ex = Assert.Throws<FineAlignException>(() => source.Compute(Batch(out _)));
        Assert.Contains(expected, ex.Message);
        Assert.Contains($"reward endpoint {url} (reward batch 1)", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    private static Task Fail(HttpContext ctx) { ctx.Response.StatusCode = 500; return ctx.Response.WriteAsync("boom"); }

    [Fact]
    public void AnUnreachableRewardServerIsAClearErrorInsideTheTrainer()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        using var policy = ModelIO.Load(modelDir);
        using var reference = ModelIO.Load(modelDir);
        var reward = RewardSpecs.Build(["lexicon", $"http://127.0.0.1:{port}/get_reward@0.5"], new ByteTokenizer());
        using var trainer = new OnlineRlTrainer(policy, reference, null, new ByteTokenizer(), reward, ["a", "b"],
            OnlineRlOptions.Grpo with { OutputDir = tmp.Path, Steps = 1, BatchSize = 4, NumGenerations = 2, MaxNewTokens = 3 })
        { WriteTensorBoard = false };
        var ex = Assert.Throws<FineAlignException>(() => trainer.Train());
        Assert.Contains($"reward endpoint http://127.0.0.1:{port}/get_reward (reward batch 1)", ex.Message);
        Assert.Contains("generation batch 1", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public async Task LabelsComeFromTheLabelKeyColumnAndExtraLogsAreLogged()
    {
        var seenLabels = new List<string?>();
        await using var app = await RemoteRolloutTests.StandIn(async ctx =>
        {
            var body = (await JsonNode.ParseAsync(ctx.Request.Body))!;
            lock (seenLabels) seenLabels.AddRange(body["labels"]!.AsArray().Select(x => x?.GetValue<string>()));
            int n = body["query"]!.AsArray().Count;
            await ctx.Response.WriteAsJsonAsync(new { rewards = Enumerable.Repeat(1.0, n), scores = Enumerable.Repeat(0.0, n),
                extra_logs = new { acc = Enumerable.Range(0, n).Select(i => (double)(i % 2)) } });
        });
        var source = RewardSpecs.Build([RemoteRolloutTests.Address(app) + "get_reward"], new ByteTokenizer(), labelKey: "solution");
        Assert.Equal(["solution"], source.Columns);
        var batch = Batch(out _) with
        {
            Columns = [new Dictionary<string, string> { ["solution"] = "4" }, new Dictionary<string, string> { ["solution"] = "6" }],
        };
        using (var r = source.Compute(batch))
        {
            Assert.Equal(new string?[] { "4", "6" }, seenLabels);
            Assert.Equal(0.5, r.Metrics["rewards/http/acc"], 9);
            Assert.Equal(new float[] { 0, 0, 1, 0, 1, 0 }, r.Values.data<float>().ToArray());   // "rewards" wins over "scores"
        }

        // Through the CLI: --label-key names a --prompts column; a row without it is refused naming file, line and field.
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string prompts = Path.Combine(tmp.Path, "p.jsonl");
        CommandFixtures.WriteLines(prompts, "{\"prompt\": \"2+2\", \"solution\": \"4\"}", "{\"prompt\": \"3+3\", \"solution\": \"6\"}");
        string[] Args(string key) => ["grpo", "--policy", modelDir, "--prompts", prompts, "--out", Path.Combine(tmp.Path, key), "--steps", "1",
            "--batch-size", "4", "--num-generations", "2", "--max-new-tokens", "3", "--threads", "1",
            "--reward", RemoteRolloutTests.Address(app) + "get_reward", "--label-key", key];
        seenLabels.Clear();
        var (code, stdout, err) = await Task.Run(() => CliRunner.Run(Args("solution")));
        Assert.True(code == 0, err + stdout);
        Assert.Equal(4, seenLabels.Count);
        Assert.All(seenLabels, l => Assert.Contains(l, new[] { "4", "6" }));
        var (bad, _, badErr) = await Task.Run(() => CliRunner.Run(Args("answer")));
        Assert.Equal(1, bad);
        Assert.Contains($"{prompts}:1: field 'answer': missing", badErr);
    }

    [Fact]
    public void AMalformedHttpSpecIsRefused()
    {
        var ex = Assert.Throws<FineAlignException>(() => RewardSpecs.Build(["http-token:"], new ByteTokenizer()));
        Assert.Contains("is not a URL", ex.Message);
    }
}
