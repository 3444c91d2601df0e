using System.Text.Json.Nodes;
using FineAlign.Rewards;
using FineAlign.Serving;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using Microsoft.AspNetCore.Http;
using static TorchSharp.torch;

namespace FineAlign.Tests.Remote;

/// <summary><c>judge:URL</c>: a rubric rendered per response, sent to /v1/chat/completions, the score parsed from the reply.</summary>
[Collection("Serial torch RNG")]
public class JudgeRewardTests
{
    private static RewardBatch Batch() => new(tensor(new long[] { 104, 105, 111, 107 }, new long[] { 2, 2 }),
        tensor(new float[] { 1, 1, 1, 0 }, new long[] { 2, 2 }), null, ["Q1", "Q2"], ["good answer", "bad"]);

    [Theory]
    [InlineData("Score: 7", 7.0)]
    [InlineData("The answer is fine. **Rating:** 3.5 out of 10", 3.5)]
    [InlineData("  -2 ", -2.0)]
    [InlineData("score 1, then revised: Score = 9", 9.0)]
    [InlineData("no idea", null)]
    [InlineData("it has 3 issues", null)]
    public void ScoresAreParsedFromTheLastScoreMention(string reply, double? expected) => Assert.Equal(expected, JudgeRewardSource.ParseScore(reply));

    [Fact]
    public async Task TheJudgeSeesTheRubricAndItsScoreLandsOnTheLastToken()
    {
        using var tmp = TestPaths.NewTempDir();
        string rubric = Path.Combine(tmp.Path, "rubric.txt");
        File.WriteAllText(rubric, "Rate the answer to {prompt}.\nAnswer: {response}\nReply 'Score: N'.");
        var seen = new List<string>();
        await using var app = await RemoteRolloutTests.StandIn(async ctx =>
        {
            var body = (await JsonNode.ParseAsync(ctx.Request.Body))!;
            string content = body["messages"]![0]!["content"]!.GetValue<string>();
            lock (seen) seen.Add(content);
            await ctx.Response.WriteAsJsonAsync(new { choices = new[] { new { message = new { role = "assistant", content = $"Score: {(content.Contains("good") ? 8 : 2)}" } } } });
        });
        var source = RewardSpecs.Build(["judge:" + RemoteRolloutTests.Address(app)], new ByteTokenizer(), judgeOptions: new JudgeOptions { RubricPath = rubric });
        using var r = source.Compute(Batch());
        Assert.Equal(new float[] { 0, 8, 2, 0 }, r.Values.data<float>().ToArray());
        Assert.Contains("Rate the answer to Q1.\nAnswer: good answer\nReply 'Score: N'.", seen);
    }

    [Fact]
    public async Task AJudgeWithoutAScoreOnRealServeIsAnErrorNamingTheResponse()
    {
        using var tmp = TestPaths.NewTempDir();
        string modelDir = CommandFixtures.SaveByteModel(Path.Combine(tmp.Path, "model"));
        string rubric = Path.Combine(tmp.Path, "rubric.txt");
        File.WriteAllText(rubric, "{prompt} {response} Score:");
        await using var server = await OpenAiServer.StartAsync(new ServeOptions { ModelPath = modelDir, ServedModelName = "tiny", Port = 0, ChatTemplate = "chatml" });
        var source = new JudgeRewardSource("judge", server.BaseAddress, new JudgeOptions { RubricPath = rubric, Model = "tiny", MaxTokens = 8 });
        // A random tiny model answers bytes, not a score: the error names the endpoint, the response and the reply.
        var ex = Assert.Throws<FineAlignException>(() => source.Compute(Batch()));
        Assert.Contains("no score in the judge's reply", ex.Message);
        Assert.Contains("of reward batch 1", ex.Message);
        Assert.Contains(server.BaseAddress.ToString().TrimEnd('/') + "/v1/chat/completions", ex.Message);
        Assert.DoesNotContain('\n', ex.Message);
    }

    [Fact]
    public void AJudgeNeedsARubricWithAResponsePlaceholder()
    {
        using var tmp = TestPaths.NewTempDir();
        var ex = Assert.Throws<FineAlignException>(() => RewardSpecs.Build(["judge:http://127.0.0.1:1"], new ByteTokenizer()));
        Assert.Contains("--judge-rubric", ex.Message);
        string rubric = Path.Combine(tmp.Path, "r.txt");
        File.WriteAllText(rubric, "no placeholder");
        ex = Assert.Throws<FineAlignException>(() => RewardSpecs.Build(["judge:http://127.0.0.1:1"], new ByteTokenizer(), judgeOptions: new JudgeOptions { RubricPath = rubric }));
        Assert.Contains("{response}", ex.Message);
    }
}
