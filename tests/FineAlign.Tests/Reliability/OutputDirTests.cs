using FineAlign.Cli.Commands;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// Unwritable outputs fail before any work with one line naming the option. Tests run as root in CI, where chmod does
/// not stop writes, so "unwritable" is made with a regular file where a folder is needed.
/// </summary>
[Collection("Serial torch RNG")]
public class OutputDirTests
{
    [Theory]
    [InlineData("sft")]
    [InlineData("pretrain")]
    public void Training_into_a_path_under_a_file_fails_before_training_starts(string command)
    {
        using var tmp = TestPaths.NewTempDir();
        string blocker = Path.Combine(tmp.Path, "not-a-folder");
        File.WriteAllText(blocker, "x");
        string text = Path.Combine(tmp.Path, "corpus.txt");
        File.WriteAllText(text, string.Join("\n\n", Enumerable.Range(0, 30).Select(i => $"Document {i} about cats and dogs.")));
        foreach (var outDir in new[] { Path.Combine(blocker, "run"), Path.Combine(blocker, "a", "b"), blocker })
        {
            string[] args = [command, "--out", outDir, "--init", "tiny", "--context-length", "32", "--corpus-size", "20",
                             "--max-steps", "2", "--samples", "0", .. (command == "pretrain" ? new[] { "--data", text } : [])];
            var r = CliRunner.Run(args);
            string err = MalformedInputTests.AssertOneLineError(r, "not-a-folder", "--out");
            Assert.Contains(outDir == blocker ? "is a file, not a folder" : "is a file", err);
            Assert.Equal("", r.Out);   // refused before the model was built or data read
        }
        Assert.Equal(2, Directory.GetFileSystemEntries(tmp.Path).Length);   // nothing created (not even a probe file)
        Assert.Equal("x", File.ReadAllText(blocker));
    }

    [Fact]
    public void Convert_and_logprobs_outputs_under_a_file_fail_cleanly()
    {
        using var tmp = TestPaths.NewTempDir();
        string blocker = Path.Combine(tmp.Path, "not-a-folder");
        File.WriteAllText(blocker, "x");
        string input = Path.Combine(tmp.Path, "ids.jsonl");
        File.WriteAllText(input, "{\"input_ids\": [1, 2, 3]}\n");

        var convert = CliRunner.Run("convert", "--model", BadModelFolders.Fixture, "--out", Path.Combine(blocker, "converted"));
        MalformedInputTests.AssertOneLineError(convert, "not-a-folder", "is a file");
        var logprobs = CliRunner.Run("logprobs", "--model", BadModelFolders.Fixture, "--input", input, "--output", Path.Combine(blocker, "s.jsonl"));
        MalformedInputTests.AssertOneLineError(logprobs, "not-a-folder", "is a file");
        Assert.Equal(2, Directory.GetFileSystemEntries(tmp.Path).Length);   // the blocker and the input only
    }

    [Fact]
    public void Too_little_disk_space_for_the_checkpoints_is_refused()
    {
        using var tmp = TestPaths.NewTempDir();
        // 2^50 parameters cannot fit on any test machine's disk; a tiny model always does.
        var e = Assert.Throws<FineAlignException>(() => OutputCheck.DiskSpace(Path.Combine(tmp.Path, "run"), 1L << 50, 2, "--out"));
        Assert.Contains("MB free", e.Message);
        OutputCheck.DiskSpace(Path.Combine(tmp.Path, "run"), 30_000, 2, "--out");
        Assert.False(Directory.Exists(Path.Combine(tmp.Path, "run")));
    }
}
