using System.Buffers.Binary;
using System.Text;
using FineAlign.Cli;
using FineAlign.Tests.Support;
using FineAlign.Training;

namespace FineAlign.Tests.Reliability;

/// <summary>
/// The TensorBoard event files, read back by a decoder written here from the formats' specifications (TFRecord:
/// length, masked CRC32C of the length, data, masked CRC32C of the data; protobuf wire format; tensorflow.Event and
/// Summary field numbers), not from the writer's code: the CRC is a bitwise CRC32C, not BitOperations.
/// </summary>
public class TensorBoardEventTests
{
    public sealed record Event(double WallTime, long Step, string? FileVersion, List<(string Tag, float Value)> Values);

    [Fact]
    public void Crc32C_matches_the_standard_check_value()
    {
        Assert.Equal(0xE3069283u, BitwiseCrc32C(Encoding.ASCII.GetBytes("123456789")));   // the catalogue's check value
        Assert.Equal(BitwiseCrc32C(Encoding.ASCII.GetBytes("123456789")), TensorBoardWriter.Crc32C(Encoding.ASCII.GetBytes("123456789")));
    }

    [Fact]
    public void Events_decode_to_step_unix_wall_time_and_value_with_valid_crcs()
    {
        using var tmp = TestPaths.NewTempDir();
        double t = 1_790_000_000.25;   // a fixed Unix time in seconds
        using (var w = new TensorBoardWriter(tmp.Path, () => t))
        {
            w.AddScalar("train/loss", 2.5f, 1);
            t += 1.5;
            w.AddScalar("eval/loss", -0.125f, 300_000_000_000);   // a step beyond int32
        }
        var events = Decode(Assert.Single(Directory.GetFiles(tmp.Path, "events.out.tfevents.*")));
        Assert.Equal(3, events.Count);
        Assert.Equal("brain.Event:2", events[0].FileVersion);
        Assert.Equal(1_790_000_000.25, events[0].WallTime);
        Assert.Equal((1L, 1_790_000_000.25), (events[1].Step, events[1].WallTime));
        Assert.Equal(("train/loss", 2.5f), Assert.Single(events[1].Values));
        Assert.Equal((300_000_000_000L, 1_790_000_001.75), (events[2].Step, events[2].WallTime));
        Assert.Equal(("eval/loss", -0.125f), Assert.Single(events[2].Values));
    }

    [Fact]
    public void A_training_run_writes_wall_time_in_unix_seconds_not_dotnet_ticks()
    {
        using var tmp = TestPaths.NewTempDir();
        double before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;
        var logger = new MetricsLogger(tmp.Path);
        logger.Log(new Dictionary<string, double> { ["step"] = 3, ["loss"] = 1.25, ["eval/loss"] = 1.5 });
        logger.Dispose();
        double after = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;
        var file = Assert.Single(Directory.GetFiles(Path.Combine(tmp.Path, MetricsLogger.TensorBoardFolder)));
        var events = Decode(file);
        foreach (var e in events) Assert.InRange(e.WallTime, before - 1, after + 1);   // ticks would be ~6.4e17
        var scalars = events.SelectMany(e => e.Values.Select(v => (e.Step, v.Tag, v.Value))).OrderBy(x => x.Tag).ToList();
        Assert.Equal([(3L, "eval/loss", 1.5f), (3L, "train/loss", 1.25f)], scalars);
    }

    [Fact]
    public void A_damaged_record_fails_the_crc()
    {
        using var tmp = TestPaths.NewTempDir();
        using (var w = new TensorBoardWriter(tmp.Path, () => 1e9)) w.AddScalar("x", 1f, 1);
        string file = Directory.GetFiles(tmp.Path)[0];
        var bytes = File.ReadAllBytes(file);
        bytes[^6] ^= 0x40;   // inside the last record's data
        File.WriteAllBytes(file, bytes);
        Assert.Throws<InvalidDataException>(() => Decode(file));
    }

    [Fact]
    public void Piped_progress_repeats_the_last_line_when_a_step_is_slow()
    {
        var sw = new StringWriter();
        var w = TextWriter.Synchronized(sw);   // written by the timer thread; its methods lock the wrapper
        string Text() { lock (w) return sw.ToString(); }
        int Heartbeats() => Text().Split('\n').Count(l => l.EndsWith("(still running)"));
        using (var p = new PlainProgress(w, TimeSpan.FromMilliseconds(150), heartbeat: true))
        {
            p.Report(new ProgressUpdate("reference log-probs (train)", 1, 10));
            // Timers run on the thread pool, which a loaded test run can delay: wait for two beats, not a fixed time.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (Heartbeats() < 2 && clock.Elapsed < TimeSpan.FromSeconds(20)) Thread.Sleep(50);
        }
        var lines = Text().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("[00:00:00] reference log-probs (train) 1/10 (10%)", lines[0]);
        Assert.True(lines.Count(l => l.EndsWith("(still running)")) >= 2, Text());
        int n = lines.Length;
        Thread.Sleep(400);
        Assert.Equal(n, Text().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);   // stopped when disposed
    }

    // ---------------------------------------------------------------- decoder (from the specifications)

    public static List<Event> Decode(string path)
    {
        var data = File.ReadAllBytes(path);
        var events = new List<Event>();
        int pos = 0;
        while (pos < data.Length)
        {
            if (data.Length - pos < 12) throw new InvalidDataException("truncated record header");
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(pos, 8));
            uint lengthCrc = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(pos + 8, 4));
            if (lengthCrc != Mask(BitwiseCrc32C(data.AsSpan(pos, 8)))) throw new InvalidDataException("length CRC mismatch");
            pos += 12;
            var record = data.AsSpan(pos, (int)length);
            uint dataCrc = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan(pos + (int)length, 4));
            if (dataCrc != Mask(BitwiseCrc32C(record))) throw new InvalidDataException("data CRC mismatch");
            events.Add(ParseEvent(record.ToArray()));
            pos += (int)length + 4;
        }
        return events;
    }

    private static Event ParseEvent(byte[] b)
    {
        double wall = 0; long step = 0; string? version = null;
        var values = new List<(string, float)>();
        foreach (var (field, wire, start, len, varint) in Fields(b))
        {
            if (field == 1 && wire == 1) wall = BinaryPrimitives.ReadDoubleLittleEndian(b.AsSpan(start, 8));
            else if (field == 2 && wire == 0) step = (long)varint;
            else if (field == 3 && wire == 2) version = Encoding.UTF8.GetString(b, start, len);
            else if (field == 5 && wire == 2)
            {
                var summary = b[start..(start + len)];
                foreach (var (sf, sw, ss, sl, _) in Fields(summary))
                    if (sf == 1 && sw == 2)
                    {
                        var value = summary[ss..(ss + sl)];
                        string tag = ""; float v = float.NaN;
                        foreach (var (vf, vw, vs, vl, _) in Fields(value))
                        {
                            if (vf == 1 && vw == 2) tag = Encoding.UTF8.GetString(value, vs, vl);
                            else if (vf == 2 && vw == 5) v = BinaryPrimitives.ReadSingleLittleEndian(value.AsSpan(vs, 4));
                        }
                        values.Add((tag, v));
                    }
            }
        }
        return new Event(wall, step, version, values);
    }

    // (field number, wire type, payload start, payload length, varint value)
    private static IEnumerable<(int, int, int, int, ulong)> Fields(byte[] b)
    {
        int pos = 0;
        while (pos < b.Length)
        {
            ulong key = Varint(b, ref pos);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: { ulong v = Varint(b, ref pos); yield return (field, wire, pos, 0, v); break; }
                case 1: yield return (field, wire, pos, 8, 0); pos += 8; break;
                case 5: yield return (field, wire, pos, 4, 0); pos += 4; break;
                case 2: { int len = (int)Varint(b, ref pos); yield return (field, wire, pos, len, 0); pos += len; break; }
                default: throw new InvalidDataException($"unsupported wire type {wire}");
            }
        }
    }

    private static ulong Varint(byte[] b, ref int pos)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte x = b[pos++];
            v |= (ulong)(x & 0x7F) << shift;
            if (x < 0x80) return v;
        }
    }

    private static uint Mask(uint crc) => ((crc >> 15) | (crc << 17)) + 0xa282ead8u;

    // Bit-at-a-time CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
    private static uint BitwiseCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte x in data)
        {
            crc ^= x;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
        }
        return ~crc;
    }
}
